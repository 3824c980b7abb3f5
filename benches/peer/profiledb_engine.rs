//! profiledb behind [`Engine`](super::Engine).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use profiledb::{ActivityFilter, Durability, Ident, ManualClock, ProfileDb};

use super::{Batch, Engine, EQ_INDEXED, NOW, RANGE_INDEXED};

pub struct ProfileEngine {
    pub db: ProfileDb,
    clock: ManualClock,
    dir: PathBuf,
}

impl ProfileEngine {
    /// `feed`: with the change feed on.
    pub fn open(dir: &Path, cache_bytes: u64, feed: bool) -> ProfileEngine {
        let clock = ManualClock::new(NOW);
        let db = ProfileDb::builder()
            .durability(Durability::Buffered)
            .cache_bytes(cache_bytes)
            .clock(Arc::new(clock.clone()))
            .change_feed(feed.then(profiledb::ChangeFeed::default))
            .open(dir)
            .expect("open profiledb");
        ProfileEngine {
            db,
            clock,
            dir: dir.to_path_buf(),
        }
    }
}

impl Engine for ProfileEngine {
    fn ingest_batch(&mut self, batch: &Batch) {
        self.db.write_batch(&batch.ops).expect("write_batch");
    }

    fn durable_write(&mut self, batch: &Batch) {
        self.db.write_batch(&batch.ops).expect("write");
        self.db.flush().expect("flush");
    }

    fn define_topics(&mut self) {
        for (id, name, default) in profiledb::synth::topics() {
            self.db.define_topic(id, &name, default).expect("topic");
        }
    }

    fn index_attributes(&mut self) {
        for a in EQ_INDEXED {
            self.db.index_attribute(a).expect("index");
        }
        for a in RANGE_INDEXED {
            self.db.index_attribute_range(a).expect("range index");
        }
    }

    fn create_segment(&mut self, name: &str, condition: &str) {
        self.db
            .create_segment(name, Some(condition))
            .expect("segment");
    }

    fn profile_overview(&mut self, id: &str, recent: usize) -> usize {
        let p = self
            .db
            .profile(&Ident::id(id), recent)
            .expect("profile")
            .expect("the person exists");
        p.person.attributes.len()
            + p.subscription.topics.len()
            + p.activities.len()
            + p.deliveries.len()
            + p.segments.len()
            + p.devices.len()
            + p.relationships.len()
    }

    fn timeline_page(&mut self, id: &str, limit: usize) -> usize {
        self.db
            .activities(&Ident::id(id), &ActivityFilter::new(limit))
            .expect("activities")
            .len()
    }

    fn count(&mut self, condition: &str) -> u64 {
        self.db.count(condition).expect("count")
    }

    fn segment_list(&mut self, id: &str) -> usize {
        self.db
            .person_segments(&Ident::id(id))
            .expect("segments")
            .len()
    }

    fn set_now(&mut self, now: i64) {
        self.clock.set(now);
    }

    fn refresh(&mut self) -> (u64, u64) {
        let r = self.db.refresh().expect("refresh");
        (r.entered, r.exited)
    }

    fn flush(&mut self) {
        self.db.flush().expect("flush");
    }

    fn bytes_on_disk(&self) -> u64 {
        super::dir_bytes(&self.dir)
    }

    fn compact(&mut self) {
        self.db
            .compact()
            .expect("compact")
            .expect("no reads in progress");
    }

    fn explain(&mut self, condition: &str) -> String {
        let e = self.db.explain(condition).expect("explain");
        format!(
            "{}\n({} people checked one by one)",
            e.lines.join("\n"),
            e.scanned
        )
    }
}
