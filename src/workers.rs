//! The data plane's threads: one single-threaded tokio runtime per core.
//!
//! Agents' connections are accepted on the main runtime and handed out in
//! turn to the workers; a connection then lives on one worker for its whole
//! life, with its requests, its timers and (through [`worker_index`]) its
//! own pool of upstream connections. Nothing is stolen between threads, so
//! a request never pays for waking another thread: with a bare hyper proxy
//! (`examples/bare_proxy.rs`), runtimes per core keep up with nginx where
//! one work-stealing runtime does not (docs/performance.md).
//!
//! The control plane (admin API, reloads, webhooks, the expiry sweep) stays
//! on the main multi-threaded runtime, where work stealing is harmless.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;

thread_local! {
    /// Which worker this thread is, if it is one.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running on this thread, or `None` off the data
/// plane. Pools keyed by it keep a connection on the thread that made it.
pub fn worker_index() -> Option<usize> {
    WORKER.with(Cell::get)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start data-plane worker {index}: {source}")]
pub struct WorkerError {
    index: usize,
    source: std::io::Error,
}

/// The running workers. Dropping it without [`Workers::stop`] leaves the
/// threads running until the process ends.
pub struct Workers {
    handles: Vec<Handle>,
    // One oneshot per worker: each worker's thread blocks on its receiver,
    // so sending (or dropping) ends that runtime.
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub fn start(count: usize) -> Result<Workers, WorkerError> {
        let count = count.max(1);
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| WorkerError { index, source })?;
            handles.push(rt.handle().clone());
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            stops.push(stop_tx);
            let thread = std::thread::Builder::new()
                .name(format!("airlock-worker-{index}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(Some(index)));
                    rt.block_on(async {
                        let _ = stop_rx.await;
                    });
                    // Dropping the runtime cancels whatever is left; the
                    // server drained its connections before stopping us.
                    drop(rt);
                })
                .map_err(|source| WorkerError { index, source })?;
            threads.push(thread);
        }
        Ok(Workers {
            handles,
            stops,
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// How many workers there are.
    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Runs `task` on the next worker in turn.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(task);
    }

    /// Ends every worker's runtime and waits for the threads.
    pub fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The default number of workers: one per available core.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The most workers an override may ask for.
pub const MAX_WORKERS: usize = 1024;

/// A worker count that is not a whole number from 1 to [`MAX_WORKERS`].
#[derive(Debug, thiserror::Error)]
#[error("`AIRLOCK_WORKERS` must be a whole number from 1 to {MAX_WORKERS} (data-plane threads), not `{0}`; unset it for one per core")]
pub struct BadWorkerCount(pub String);

/// The worker count from an override such as `AIRLOCK_WORKERS`: the
/// default when it is absent, an error (never a silent fallback) when it is
/// not a usable number.
pub fn count_from(value: Option<&str>) -> Result<usize, BadWorkerCount> {
    let Some(raw) = value else {
        return Ok(default_count());
    };
    raw.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_WORKERS).contains(n))
        .ok_or_else(|| BadWorkerCount(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_override_is_a_number_in_range_or_an_error() {
        assert_eq!(count_from(None).unwrap(), default_count());
        assert_eq!(count_from(Some("3")).unwrap(), 3);
        assert_eq!(count_from(Some(" 2 ")).unwrap(), 2);
        for bad in ["0", "1025", "two", "", "-1", "1.5"] {
            let e = count_from(Some(bad)).unwrap_err().to_string();
            assert!(e.contains(&format!("not `{bad}`")), "{e}");
        }
    }

    #[test]
    fn tasks_go_round_the_workers_and_know_where_they_run() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(worker_index(), None);
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            workers.spawn(async move {
                let _ = tx.send(worker_index());
            });
        }
        let mut seen: Vec<Option<usize>> = (0..4).map(|_| rx.recv().unwrap()).collect();
        seen.sort();
        assert_eq!(seen, vec![Some(0), Some(0), Some(1), Some(1)]);
        workers.stop();
    }
}
