//! Wiring: builds every part from the configuration, binds the listeners,
//! and runs until SIGTERM or Ctrl-C, then drains and flushes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use crate::admin::{self, AdminState};
use crate::approval::Approvals;
use crate::audit::AuditSink;
use crate::config::{Config, ConfigError, StoreLocation};
use crate::feedback::DailyCounters;
use crate::notify::WebhookOutbox;
use crate::problem::SourceProblem;
use crate::proxy::{self, ProxyState, ServeOptions};
use crate::reload::Reloader;
use crate::snapshot::GatewaySnapshot;
use crate::store::{ApprovalStore, CounterStore, PostgresStore, SqliteStore};
use crate::telemetry::Metrics;
use crate::upstream::UpstreamClients;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the policies did not load:\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Policy(Vec<SourceProblem>),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("cannot listen on `{addr}` for the {listener}: {source}")]
    Bind {
        /// Which listener: `listen`, `admin.listen` or `demo.listen`.
        listener: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("cannot listen for shutdown signals: {0}")]
    Signals(std::io::Error),
    #[error("cannot open the approval store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Workers(crate::workers::WorkerError),
    #[error(transparent)]
    WorkerCount(#[from] crate::workers::BadWorkerCount),
}

/// Opens the configured approval store.
pub async fn open_store(
    location: &StoreLocation,
) -> Result<Arc<dyn ApprovalStore>, crate::store::StoreError> {
    Ok(open_stores(location).await?.0)
}

/// Opens the configured store, as the approvals' store and the daily
/// counters' (one database, one connection or pool).
pub async fn open_stores(
    location: &StoreLocation,
) -> Result<(Arc<dyn ApprovalStore>, Arc<dyn CounterStore>), crate::store::StoreError> {
    fn both<S: ApprovalStore + CounterStore + 'static>(
        s: S,
    ) -> (Arc<dyn ApprovalStore>, Arc<dyn CounterStore>) {
        let s = Arc::new(s);
        (s.clone(), s)
    }
    Ok(match location {
        StoreLocation::Sqlite(path) => both(SqliteStore::open(path)?),
        StoreLocation::SqliteMemory => both(SqliteStore::in_memory()?),
        StoreLocation::Postgres(url) => both(PostgresStore::connect(url).await?),
    })
}

/// Loads the configuration and compiles the first snapshot: what `serve`,
/// `check` and `explain` all start from.
pub fn load_snapshot(
    config_path: &Path,
    clients: &UpstreamClients,
) -> Result<GatewaySnapshot, AppError> {
    let config = Config::load(config_path)?;
    GatewaySnapshot::build(Arc::new(config), clients).map_err(AppError::Policy)
}

/// Runs Airlock until a shutdown signal.
pub async fn serve(config_path: PathBuf) -> Result<(), AppError> {
    // First of all: a SIGTERM that comes as soon as Airlock answers (its
    // health check included) must still stop it cleanly, with every queued
    // audit record written, rather than kill it by the default action.
    let shutdown = shutdown_signal().map_err(AppError::Signals)?;
    let metrics = Arc::new(Metrics::new());
    let config = Config::load(&config_path)?;
    // AIRLOCK_WORKERS overrides the number of data-plane threads (default:
    // one per core); mainly for benchmarks.
    let worker_count =
        crate::workers::count_from(std::env::var("AIRLOCK_WORKERS").ok().as_deref())?;
    let workers = crate::workers::Workers::start(worker_count).map_err(AppError::Workers)?;
    let clients = UpstreamClients::new(config.timeouts.upstream_idle, workers.count());
    let snapshot =
        GatewaySnapshot::build(Arc::new(config.clone()), &clients).map_err(AppError::Policy)?;
    for w in snapshot.config_warnings() {
        tracing::warn!("{w}");
    }
    let live = Arc::new(ArcSwap::from_pointee(snapshot));
    let (audit, audit_writer) = AuditSink::start(&config.audit, metrics.clone())?;
    // logrotate's `postrotate` sends SIGHUP, which also reloads policies.
    audit.reopen_on_sighup();

    // Approvals: settle what a crash interrupted, expire what ran out while
    // we were down, then resume the outbox, before any agent is served.
    let (store, counter_store) = open_stores(&config.store).await?;
    let counters = Arc::new(DailyCounters::new(workers.count(), metrics.clone()));
    let flusher = counters.spawn_flusher(counter_store.clone());
    let outbox_wake = Arc::new(tokio::sync::Notify::new());
    let approvals = Arc::new(Approvals::new(
        store.clone(),
        metrics.clone(),
        outbox_wake.clone(),
        audit.clone(),
        counters.clone(),
    ));
    approvals.follow_store_changes();
    approvals.settle_interrupted().await?;
    approvals.sweep_expired(&config).await?;
    approvals.resync_gauge().await?;
    // Operators' pauses are in force before any agent is served.
    let overrides = Arc::new(
        crate::oversight::Overrides::load(
            store.clone(),
            approvals.clone(),
            audit.clone(),
            metrics.clone(),
        )
        .await?,
    );
    // On a shared store: pauses set on other replicas reach this board,
    // and the live view shows every replica's events.
    overrides.follow_store_changes();
    crate::relay::start(&store, audit.live());
    let tally = Arc::new(crate::oversight::CallTally::default());
    // Sampled calls reach the store through one writer, off the data plane.
    let (reviews, review_writer) = crate::sampling::ReviewQueue::start(
        store.clone(),
        metrics.clone(),
        config.sampling.queue,
        {
            let live = live.clone();
            move || live.load().config.sampling.retain
        },
    );
    let pauses = overrides.board.clone();
    let config_of = {
        let live = live.clone();
        move || live.load().config.clone()
    };
    let sweep = approvals.spawn_expiry_sweep(config_of.clone());
    let webhook_client = clients
        .client(None, crate::notify::outbox::CONNECT_TIMEOUT)
        .map_err(|e| AppError::Tls(e.to_string()))?;
    let outbox = WebhookOutbox {
        store,
        wake: outbox_wake,
        metrics: metrics.clone(),
        client: webhook_client,
        config: Arc::new(config_of),
    }
    .spawn();
    let checker: Arc<dyn crate::approval::CallChecker> =
        Arc::new(proxy::recheck::SnapshotChecker {
            live: live.clone(),
            pauses: pauses.clone(),
        });

    let reloader = Reloader::new(config_path.clone(), live.clone(), clients, metrics.clone());
    reloader.watch_sighup();
    // Held until shutdown; dropping it ends the watch.
    let _watcher = match crate::watch::watch(reloader.clone(), &config_path, &config.policies) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("{e}; reload with SIGHUP or POST /v1/reload instead");
            None
        }
    };

    let bind = |listener: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Bind {
                listener,
                addr,
                source,
            })
    };
    let proxy_listener = bind("proxy (`listen`)", config.listen).await?;
    let admin_listener = bind("admin API (`admin.listen`)", config.admin.listen).await?;
    let tls = match &config.tls {
        Some(t) => Some(proxy::server_tls(&t.cert, &t.key).map_err(AppError::Tls)?),
        None => None,
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(demo) = &config.demo {
        let demo_listener = bind("demo tools (`demo.listen`)", demo.listen).await?;
        eprintln!(
            "airlock: demo tools listening on http://{}",
            local(&demo_listener)
        );
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(demo_listener, crate::demo::router())
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
        }));
    }

    let admin_state = AdminState {
        live: live.clone(),
        metrics: metrics.clone(),
        reloader: reloader.clone(),
        approvals: approvals.clone(),
        checker,
        audit: audit.clone(),
        // Moved, not cloned: it holds an audit sink, and the audit writer
        // finishes only once every sink is gone.
        overrides,
        tally: tally.clone(),
        sessions: Arc::default(),
        reviews: reviews.clone(),
        counters: counters.clone(),
    };
    eprintln!(
        "airlock: admin listening on http://{}",
        local(&admin_listener)
    );
    let mut stop = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(admin_listener, admin::router(admin_state))
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await;
    }));

    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "airlock: proxy listening on {scheme}://{} (policy snapshot {})",
        local(&proxy_listener),
        live.load().policy.version()
    );
    let shutdown = stop_waits_on(shutdown, approvals.clone());
    let state = Arc::new(ProxyState {
        live,
        audit,
        metrics,
        approvals,
        pauses,
        tally,
        eliciting: Default::default(),
        reviews,
        counters: counters.clone(),
    });
    let opts = ServeOptions {
        header_read: config.timeouts.header_read,
        shutdown_grace: config.timeouts.shutdown_grace,
        tls,
    };
    proxy::serve(proxy_listener, &workers, state, opts, shutdown).await;
    workers.stop();
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    sweep.abort();
    outbox.abort();
    // The last flush waits for one in flight (the flusher's lock), and the
    // flusher stops only after it: a flush cut short after its write
    // committed would send the same sums again.
    flush_at_exit(&counters, counter_store.as_ref()).await;
    flusher.abort();
    // Every sink clone lived in the proxy state and the admin state, which
    // are gone now; the writer drains what is queued and exits.
    audit_writer.finish();
    // Every queue clone is gone with the states: the writer stores what is
    // queued and ends.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), review_writer).await;
    eprintln!("airlock: stopped");
    Ok(())
}

/// `shutdown`, then every agent waiting on a hold is answered at once (the
/// hold is durable, so it comes back for it), so the drain does not wait
/// out `approvals.wait`.
async fn stop_waits_on(shutdown: impl std::future::Future<Output = ()>, approvals: Arc<Approvals>) {
    shutdown.await;
    approvals.stop_waiting();
}

/// The last flush of the daily counters, retried briefly (a store that
/// restarts); counts that still cannot be stored are said, not dropped
/// silently.
async fn flush_at_exit(counters: &DailyCounters, store: &dyn CounterStore) {
    let mut last = None;
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        match counters.flush(store).await {
            Ok(_) => return,
            Err(e) => last = Some(e),
        }
    }
    if let (Some(e), Some(t)) = (last, counters.trouble()) {
        eprintln!(
            "airlock: {} daily counts were not stored and are lost: {e}",
            t.kept
        );
    }
}

fn local(l: &TcpListener) -> String {
    l.local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Listens for SIGTERM and SIGINT from now on (tokio installs a signal's
/// handler when its listener is made, not when it is first awaited); the
/// future ends at the first of them.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = interrupt.recv() => {},
        }
        eprintln!("airlock: shutting down");
    })
}
