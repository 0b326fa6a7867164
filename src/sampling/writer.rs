//! The review queue: captures go from the workers to one writer task that
//! redacts and stores them, and prunes items past `sampling.retain`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::capture::Pending;
use crate::store::ReviewStore;
use crate::telemetry::Metrics;

/// Captures stored in one transaction at most: whatever the queue holds
/// when the writer wakes, up to this.
const BATCH: usize = 64;

/// How often items past `sampling.retain` are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The workers' end of the queue.
#[derive(Clone)]
pub struct ReviewQueue {
    // Bounded: a store slower than the sampled calls must not grow memory
    // without end; what does not fit is dropped and counted, and a worker
    // never waits for room (`try_send`).
    tx: mpsc::Sender<Pending>,
    dropped: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl ReviewQueue {
    /// Starts the writer on the current runtime; `retain` is read at each
    /// prune, so a reload changes it.
    pub fn start(
        store: Arc<dyn ReviewStore>,
        metrics: Arc<Metrics>,
        capacity: usize,
        retain: impl Fn() -> Duration + Send + 'static,
    ) -> (ReviewQueue, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let queue = ReviewQueue {
            tx,
            dropped: Arc::default(),
            metrics,
        };
        let task = tokio::spawn(write(rx, store, queue.clone_counts(), retain));
        (queue, task)
    }

    /// The counters alone, for the writer: a clone of the sender would keep
    /// the channel open after every worker is gone.
    fn clone_counts(&self) -> Counts {
        Counts {
            dropped: self.dropped.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Queues a capture without waiting; counts it dropped when the queue
    /// is full.
    pub(super) fn offer(&self, pending: Pending) {
        match self.tx.try_send(pending) {
            Ok(()) => {
                self.metrics.reviews_sampled.inc();
            }
            Err(_) => self.clone_counts().drop_one(),
        }
    }

    /// Captures dropped since start: queue full or store refused.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct Counts {
    // Relaxed: a count read by /healthz, ordering nothing else.
    dropped: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl Counts {
    fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.metrics.reviews_dropped.inc();
    }
}

async fn write(
    mut rx: mpsc::Receiver<Pending>,
    store: Arc<dyn ReviewStore>,
    counts: Counts,
    retain: impl Fn() -> Duration,
) {
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    return;
                }
                let items = batch.drain(..).map(Pending::into_item).collect::<Vec<_>>();
                if let Err(e) = store.insert_reviews(items).await {
                    tracing::warn!("{n} sampled calls were not stored for review: {e}");
                    for _ in 0..n {
                        counts.drop_one();
                    }
                }
            }
            _ = prune.tick() => {
                let keep_ms = i64::try_from(retain().as_millis()).unwrap_or(i64::MAX);
                let before = crate::clock::now_ms().saturating_sub(keep_ms);
                match store.prune_reviews(before).await {
                    Ok(n) if n > 0 => tracing::info!("pruned {n} review items past `sampling.retain`"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("review items were not pruned: {e}"),
                }
            }
        }
    }
}
