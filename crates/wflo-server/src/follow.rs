//! Following the outbox in position order without losing an event to a late commit: what the
//! live-event hub and the webhook dispatcher both read the outbox with.
//!
//! Outbox positions are taken when a transaction inserts, not when it commits, so on
//! PostgreSQL a reader can see position 12 before 11 commits; and a transaction that rolls
//! back leaves its position empty forever. A [`Follower`] reads on from the last position it
//! saw, remembers each position it stepped over as a gap, and reads the gaps again on every
//! call until they fill or their patience runs out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use wflo_core::db::{Db, Error, Executor, OutboxEvent};

/// At most this many gaps are remembered (beyond it a burst of rollbacks is not waited for).
const MAX_GAPS: usize = 10_000;

/// A cursor over the outbox that waits `patience` for skipped positions.
#[derive(Debug, Clone)]
pub(crate) struct Follower {
    /// The last position read.
    pos: i64,
    /// Positions stepped over, by when they were first seen missing.
    gaps: BTreeMap<i64, Instant>,
    patience: Duration,
}

impl Follower {
    /// A follower that reads the events after `pos`.
    pub(crate) fn from(pos: i64, patience: Duration) -> Follower {
        Follower {
            pos,
            gaps: BTreeMap::new(),
            patience,
        }
    }

    /// The events committed since the last call: those of gaps that filled, then new ones in
    /// position order, read `batch` at a time until fewer than a batch come back or `max` have
    /// been read. On an error nothing moves: the next call reads the same events again.
    pub(crate) async fn next(
        &mut self,
        db: &Db,
        batch: u64,
        max: usize,
    ) -> Result<Vec<OutboxEvent>, Error> {
        let mut gaps = self.gaps.clone();
        gaps.retain(|_, seen| seen.elapsed() < self.patience);
        let mut pos = self.pos;
        let mut found = Vec::new();
        if !gaps.is_empty() {
            let ids: Vec<i64> = gaps.keys().copied().collect();
            for ev in db.outbox().by_ids(&ids).await? {
                gaps.remove(&ev.id);
                found.push(ev);
            }
        }
        loop {
            let events = db.outbox().after(pos, None, batch).await?;
            let full = events.len() as u64 == batch;
            for ev in events {
                for missing in pos + 1..ev.id {
                    if gaps.len() < MAX_GAPS {
                        gaps.insert(missing, Instant::now());
                    }
                }
                pos = ev.id;
                found.push(ev);
            }
            if !full || found.len() >= max {
                break;
            }
        }
        self.pos = pos;
        self.gaps = gaps;
        Ok(found)
    }

    /// The position up to which everything has been read or given up on: below the oldest
    /// gap still waited for.
    pub(crate) fn settled(&self) -> i64 {
        self.gaps.keys().next().map_or(self.pos, |first| first - 1)
    }

    /// Moves on to `pos` (when it is ahead), forgetting the gaps: for a reader nobody is
    /// listening to.
    pub(crate) fn skip_to(&mut self, pos: i64) {
        self.pos = self.pos.max(pos);
        self.gaps.clear();
    }
}
