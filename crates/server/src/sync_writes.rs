//! A sync's writes that need no turn of their own at the database's writer.
//!
//! After a save wakes a fleet's held long-polls, every device re-polls at once,
//! and each reports the new version it applied; some are also due to record
//! that they were seen. With one write each, SQLite's one writer queued them
//! while the syncs held their tenant's slots, until syncs were shed. So:
//! - an applied state is written in a **group commit** ([`AppliedWrites`]):
//!   the syncs that arrive while one transaction runs are written together in
//!   the next, and each answers once its own is committed, waiting outside its
//!   tenant's slot (a wait for the disk is no work of this node's);
//! - a "last seen" time is only noted ([`LastSeen`]) and written by a task once
//!   a second in one statement, the sync answering at once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use entitle_store::{AppliedSync, Store};
use time::OffsetDateTime;
use tokio::sync::{oneshot, watch};

use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

/// The most applied states one transaction writes.
const APPLIED_BATCH: usize = 2_000;

/// Applied states waiting for the next transaction. Bounded by the node's
/// connections, since each belongs to a sync waiting for its own.
#[derive(Default)]
pub(crate) struct AppliedWrites {
    queue: Mutex<AppliedQueue>,
}

#[derive(Default)]
struct AppliedQueue {
    waiting: Vec<(AppliedSync, oneshot::Sender<bool>)>,
    /// Whether a task is writing; it takes what waits until nothing does.
    writing: bool,
}

impl AppliedWrites {
    /// Writes this applied state with the others waiting, and returns once it
    /// is committed. The writing runs in a task of its own, so that a sync
    /// whose client went away does not cancel the others' transaction.
    pub(crate) async fn record(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        sync: AppliedSync,
    ) -> ApiResult<()> {
        let (done, committed) = oneshot::channel();
        let start_writer = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.waiting.push((sync, done));
            !std::mem::replace(&mut queue.writing, true)
        };
        if start_writer {
            tokio::spawn(Arc::clone(self).write_waiting(Arc::clone(store)));
        }
        match committed.await {
            Ok(true) => Ok(()),
            // Logged by the writer.
            Ok(false) | Err(_) => Err(ApiError::internal()),
        }
    }

    async fn write_waiting(self: Arc<Self>, store: Arc<dyn Store>) {
        loop {
            let batch: Vec<_> = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if queue.waiting.is_empty() {
                    queue.writing = false;
                    return;
                }
                let take = queue.waiting.len().min(APPLIED_BATCH);
                queue.waiting.drain(..take).collect()
            };
            let (syncs, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let written = match store.record_applied(&syncs).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::error!(%error, devices = syncs.len(), "storage failure writing applied states");
                    false
                }
            };
            for waiter in waiters {
                let _ = waiter.send(written);
            }
        }
    }
}

/// How often the noted devices are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The most ids written by one statement (SQLite's JSON array and
/// PostgreSQL's array parameter both take far more; this bounds one write's
/// time behind the writer lock).
const LAST_SEEN_BATCH: usize = 5_000;

/// Devices seen since the last write. Bounded: past `cap` ids a note is
/// dropped, since a device notes itself again at its next due sync and
/// losing a last-seen time is better than unbounded memory.
pub(crate) struct LastSeen {
    pending: Mutex<HashSet<String>>,
    cap: usize,
}

impl LastSeen {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            pending: Mutex::new(HashSet::new()),
            cap,
        }
    }

    /// Notes that this device synced now; written within about a second.
    pub(crate) fn note(&self, device_id: &str) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= self.cap && !pending.contains(device_id) {
            return false;
        }
        pending.insert(device_id.to_owned());
        true
    }

    /// Writes every noted device, with the time of this write. On a failure
    /// the unwritten ids are noted again for the next try.
    pub(crate) async fn flush(&self, store: &dyn Store, metrics: &Metrics) {
        let noted: Vec<String> = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut *pending).into_iter().collect()
        };
        let now = OffsetDateTime::now_utc();
        for (i, batch) in noted.chunks(LAST_SEEN_BATCH).enumerate() {
            match store.record_last_seen(batch, now).await {
                Ok(written) => metrics.sync_writes("last_seen", written),
                Err(error) => {
                    tracing::warn!(%error, "could not write devices' last-seen times; retrying");
                    for id in noted.iter().skip(i * LAST_SEEN_BATCH) {
                        self.note(id);
                    }
                    return;
                }
            }
        }
    }

    /// Writes the noted devices once a second until the server stops; the
    /// server writes the rest once its connections have closed.
    pub(crate) async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush(store.as_ref(), &metrics).await,
                () = crate::agent::stopping(&mut stopping) => return,
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_noted_once_and_the_set_is_bounded() {
        let seen = LastSeen::new(2);
        assert!(seen.note("a"));
        assert!(seen.note("a"));
        assert_eq!(seen.len(), 1);
        assert!(seen.note("b"));
        assert!(!seen.note("c"), "past the cap a new device is dropped");
        assert!(seen.note("b"), "a device already noted stays noted");
        assert_eq!(seen.len(), 2);
    }
}
