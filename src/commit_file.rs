//! The `COMMIT` file: the sequence number of the last commit known durable, kept outside
//! sled so that open can tell when sled recovered less than was acknowledged
//! ([`Error::DataLoss`](crate::Error::DataLoss)).
//!
//! 24 bytes: two 12-byte slots, each `[seq u64 big-endian][crc32(seq bytes) ^ 0xFFFF_FFFF
//! u32 big-endian]`; both slots always hold a number (0 when the file is created), so
//! a zeroed slot fails its checksum like any other damage. A durable flush writes the new number into
//! the slot that does *not* hold the current one and then `fdatasync`s the file: one
//! small write and one sync per durable commit, instead of a temp file, its fsync, a
//! rename and a directory fsync. While the new number is being written, the other slot
//! still holds the last acknowledged one. Reading takes the larger slot. A slot that
//! fails its checksum is [`Error::Corrupted`](crate::Error::Corrupted): a 12-byte
//! `pwrite` cannot be torn by a process crash, so a bad slot means damage, and
//! guessing from the other slot could hide a data loss (the `open_damaged` fuzzer found
//! exactly that when a damaged slot was skipped). [`Builder::salvage`](crate::Builder::salvage)
//! opens anyway and rewrites the file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, OpenError, Result};

/// The file's name in the database directory.
pub const NAME: &str = "COMMIT";

const SLOT: usize = 12;
const LEN: usize = 2 * SLOT;

fn slot_bytes(seq: u64) -> [u8; SLOT] {
    let mut out = [0u8; SLOT];
    let (s, c) = out.split_at_mut(8);
    s.copy_from_slice(&seq.to_be_bytes());
    c.copy_from_slice(&(crc32fast::hash(&seq.to_be_bytes()) ^ 0xFFFF_FFFF).to_be_bytes());
    out
}

enum Slot {
    Seq(u64),
    Damaged,
}

fn read_slot(bytes: &[u8]) -> Slot {
    let Some(arr) = bytes.first_chunk::<SLOT>() else {
        return Slot::Damaged;
    };
    let seq = u64::from_be_bytes(arr.first_chunk::<8>().copied().unwrap_or_default());
    if slot_bytes(seq) == *arr {
        Slot::Seq(seq)
    } else {
        Slot::Damaged
    }
}

fn damaged(reason: String) -> Error {
    Error::Corrupted {
        family: "COMMIT file",
        key: String::new(),
        reason,
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Open(OpenError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The open `COMMIT` file of one database.
#[derive(Debug)]
pub struct CommitFile {
    dir: PathBuf,
    file: Option<File>,
    /// The slot the next number goes to: the one not holding the current number.
    next_slot: u64,
}

impl CommitFile {
    /// Reads `dir`'s `COMMIT` file: the last durable sequence number (`None` when the file
    /// does not exist yet) and the handle that records the next ones.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the file is the wrong size or both slots are damaged;
    /// an I/O error reading it.
    pub fn open(dir: &Path) -> Result<(Option<u64>, CommitFile)> {
        let path = dir.join(NAME);
        let mut handle = CommitFile {
            dir: dir.to_path_buf(),
            file: None,
            next_slot: 0,
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, handle)),
            Err(e) => return Err(io_err(&path, e)),
        };
        if bytes.len() != LEN {
            return Err(damaged(format!("is {} bytes, not {LEN}", bytes.len())));
        }
        let (a, b) = bytes.split_at(SLOT);
        let (durable, held) = match (read_slot(a), read_slot(b)) {
            (Slot::Seq(x), Slot::Seq(y)) if y > x => (y, 1),
            (Slot::Seq(x), Slot::Seq(_)) => (x, 0),
            _ => {
                return Err(damaged(
                    "a slot fails its checksum, so the last durable commit is unknown".into(),
                ))
            }
        };
        handle.next_slot = 1 - held;
        handle.file = Some(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io_err(&path, e))?,
        );
        Ok((Some(durable), handle))
    }

    /// Records `seq` as durable: writes it into the free slot and `fdatasync`s the file
    /// (the first time, creates the file and fsyncs the directory too).
    ///
    /// # Errors
    /// The I/O error; the caller must then treat the on-disk state as unknown.
    pub fn record(&mut self, seq: u64) -> std::io::Result<()> {
        let slot = self.next_slot;
        let file = self.file()?;
        file.write_all_at(&slot_bytes(seq), slot * SLOT as u64)?;
        file.sync_data()?;
        self.next_slot = 1 - slot;
        Ok(())
    }

    /// The open file; the first time on a fresh (or recreated) handle, creates it with
    /// both slots zero and fsyncs it and the directory.
    fn file(&mut self) -> std::io::Result<&File> {
        let file = match self.file.take() {
            Some(f) => f,
            None => {
                let mut f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(self.dir.join(NAME))?;
                let zero = slot_bytes(0);
                f.write_all(&zero)?;
                f.write_all(&zero)?;
                f.sync_all()?;
                File::open(&self.dir)?.sync_all()?;
                f
            }
        };
        Ok(self.file.insert(file))
    }
}

impl CommitFile {
    /// A handle that rewrites `dir`'s `COMMIT` file from scratch on its first record:
    /// for a salvage open over a damaged file.
    pub fn recreate(dir: &Path) -> CommitFile {
        CommitFile {
            dir: dir.to_path_buf(),
            file: None,
            next_slot: 0,
        }
    }

    /// Replaces both slots with `seq` alone: after a salvage open, the smaller recovered
    /// state becomes the durable one (a larger number left in the other slot would
    /// otherwise still count as acknowledged).
    ///
    /// # Errors
    /// The I/O error.
    pub fn reset(&mut self, seq: u64) -> std::io::Result<()> {
        self.record(seq)?;
        let other = self.next_slot;
        let file = self.file()?;
        file.write_all_at(&slot_bytes(seq), other * SLOT as u64)?;
        file.sync_data()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn numbers_alternate_slots_and_the_larger_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (none, mut f) = CommitFile::open(dir.path()).unwrap();
        assert_eq!(none, None);
        for seq in [3, 4, 9] {
            f.record(seq).unwrap();
            assert_eq!(CommitFile::open(dir.path()).unwrap().0, Some(seq));
        }
        // A damaged slot (either one) is an error, never a guess from the other.
        let path = dir.path().join(NAME);
        let good = std::fs::read(&path).unwrap();
        for slot in 0..2 {
            let mut bytes = good.clone();
            bytes[slot * SLOT] ^= 1;
            std::fs::write(&path, &bytes).unwrap();
            assert!(CommitFile::open(dir.path()).unwrap_err().is_corruption());
            // Zeroed, too (found by the open_damaged fuzzer when zeros meant "empty").
            let mut bytes = good.clone();
            bytes[slot * SLOT..(slot + 1) * SLOT].fill(0);
            std::fs::write(&path, &bytes).unwrap();
            assert!(CommitFile::open(dir.path()).unwrap_err().is_corruption());
        }
        std::fs::write(&path, &good).unwrap();
        let (seq, mut again) = CommitFile::open(dir.path()).unwrap();
        assert_eq!(seq, Some(9));
        again.record(10).unwrap();
        again.record(11).unwrap();
        assert_eq!(CommitFile::open(dir.path()).unwrap().0, Some(11));
        // Both slots damaged, or the wrong size: an error, never a guess.
        std::fs::write(&path, [0xCD; LEN]).unwrap();
        assert!(CommitFile::open(dir.path()).unwrap_err().is_corruption());
        std::fs::write(&path, b"garbage").unwrap();
        assert!(CommitFile::open(dir.path()).unwrap_err().is_corruption());
        // A reset leaves only the new number, even a smaller one; `recreate` starts over
        // from a damaged file.
        let mut f = CommitFile::recreate(dir.path());
        f.record(7).unwrap();
        f.record(8).unwrap();
        f.reset(5).unwrap();
        assert_eq!(CommitFile::open(dir.path()).unwrap().0, Some(5));
    }
}
