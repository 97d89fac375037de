//! The composition root: the daemon's store, send lanes, jobs, HTTP server and puller, started
//! together and stopped by one cancellation token.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::CliError;
use crate::clock::SharedClock;
use crate::config::{Settings, redacted_url};
use crate::jobs::{self, WorkerError};
use crate::outbox::{self, Deliverer};
use crate::service;

/// Starts the daemon and runs it until `shutdown` resolves.
pub async fn run_daemon(
    settings: Settings,
    clock: SharedClock,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CliError> {
    let settings = Arc::new(settings);
    // Listening for the stop signal starts before anything else: a daemon still waiting for
    // its database must stop on it too.
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    let store = tokio::select! {
        store = service::open_store_patiently(&settings) => store?,
        () = stop.cancelled() => {
            info!("stopped before the database could be reached");
            return Ok(());
        }
    };
    let name = settings.worker_instance_name();
    let deliverer = Arc::new(Deliverer::build(
        settings.clone(),
        store,
        clock,
        name.clone(),
    )?);
    // Every path absolute (the settings resolved them), so an operator sees which files
    // this daemon uses wherever it was started from.
    let templates = &settings.templates.dir;
    info!(
        worker = %name,
        database = %redacted_url(&settings.database.url),
        mail = deliverer.mailer.describe(),
        templates = %if templates.as_os_str().is_empty() {
            "built-in".to_owned()
        } else {
            format!("built-in, overridden by files in {}", templates.display())
        },
        calendar_files = %settings
            .calendar
            .custom
            .values()
            .filter_map(|c| c.ics.as_ref().map(|p| p.display().to_string()))
            .collect::<Vec<_>>()
            .join(", "),
        "renewal-worker started"
    );
    let http = if let Some(bind) = settings.http.bind {
        use secrecy::ExposeSecret;
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| CliError::Input(format!("http.bind {bind}: {e}")))?;
        info!(%bind, "HTTP API listening");
        let state = Arc::new(crate::http::HttpState::new(
            deliverer.clone(),
            settings.http.token.expose_secret(),
        ));
        Some(tokio::spawn(crate::http::serve(
            listener,
            state,
            settings.http.body_limit,
            stop.clone().cancelled_owned(),
        )))
    } else {
        None
    };
    let puller = settings.source.url.is_some().then(|| {
        let (d, stop) = (deliverer.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(d.settings.source.interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        // A pull retrying a feed that is down must not hold up the stop: a
                        // page cut short is fetched again next time (its rows are upserts).
                        let pull = crate::source::pull(&d.store, &d.settings, &d.calendars, d.clock.now());
                        tokio::select! {
                            result = pull => if let Err(e) = result {
                                warn!(error = %e, "pull from the marketplace failed; next try at the next interval");
                            },
                            _ = stop.cancelled() => break,
                        }
                    }
                    _ = stop.cancelled() => break,
                }
            }
        })
    });
    run_worker(deliverer.clone(), stop).await?;
    if let Some(p) = puller {
        let _ = p.await;
    }
    if let Some(server) = http
        && let Ok(Err(e)) = server.await
    {
        warn!(error = %e, "HTTP server stopped with an error");
    }
    deliverer.store.close().await;
    info!("renewal-worker stopped");
    Ok(())
}

/// SQLite serves one daemon well; a second one on the same file works (the outbox keeps mail
/// single) but contends for its one writer. Said once at start, with what to use instead. Read
/// from the heartbeat rows after this daemon registered, so a predecessor that crashed (its
/// row removed then) or a daemon silent past the limit is not taken for a running one.
async fn warn_of_other_sqlite_daemons(deliverer: &Deliverer) {
    if deliverer.store.backend() != crate::store::Backend::Sqlite {
        return;
    }
    let limit = outbox::silence_limit(&deliverer.settings.worker);
    let now = deliverer.clock.now();
    match deliverer.store.daemons().await {
        Ok(rows) => {
            for row in rows.iter().filter(|r| r.name != deliverer.worker_name) {
                let seen_ago = (now - row.last_beat_at).num_seconds();
                if u64::try_from(seen_ago).is_ok_and(|s| s > limit.as_secs()) {
                    continue;
                }
                warn!(
                    other_daemon = %row.name,
                    host = %row.host,
                    seen_seconds_ago = seen_ago,
                    "another daemon is running on this SQLite database; it is safe (each mail \
                     is sent once) but SQLite suits one daemon: for several daemons, use \
                     PostgreSQL (database.url = \"postgres://...\")"
                );
            }
        }
        Err(e) => warn!(error = %e, "could not look for other daemons on this database"),
    }
}

/// The daemon's work without its HTTP API and puller: the outbox's send lanes and rescuer, and
/// the queue's jobs, until `stop` is cancelled. Then batches and jobs in hand get
/// `worker.shutdown_grace` to finish.
pub async fn run_worker(
    deliverer: Arc<Deliverer>,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    // This daemon's heartbeat row, after giving back the claims of a predecessor it can tell
    // is gone; then claims of a daemon that died go back to owed before the lanes start (its
    // lease ran out), then as the rescuer finds them.
    let me = match deliverer.register().await {
        Ok(me) => me,
        Err(e) => {
            warn!(error = %e, "registering the heartbeat failed; will retry at the next beat");
            deliverer.identity(deliverer.clock.now())
        }
    };
    warn_of_other_sqlite_daemons(&deliverer).await;
    match deliverer.redrive().await {
        Ok(expired) => info!(expired_claims = expired, "claims checked at start"),
        Err(e) => warn!(error = %e, "checking claims at start failed; will retry"),
    }
    let rescuer = outbox::spawn_rescuer(&deliverer, me, stop.clone());
    let lanes = outbox::spawn_lanes(&deliverer, &stop);
    let jobs = jobs::run_jobs(deliverer.clone(), stop.clone().cancelled_owned()).await;
    // The monitor returns once the token is cancelled (or on a fault of its own): stop the
    // rest too. The lanes stop each after the batch in hand, which has its own deadline.
    stop.cancel();
    let grace = deliverer.settings.worker.shutdown_grace;
    let finished = tokio::time::timeout(grace, futures::future::join_all(lanes))
        .await
        .is_ok();
    let _ = rescuer.await;
    if finished {
        // Every batch is recorded: no claim is left, and the row would only say "silent".
        if let Err(e) = deliverer.store.remove_daemon(&deliverer.worker_name).await {
            warn!(error = %e, "removing the heartbeat row failed; other daemons will find it silent");
        }
    } else {
        // Its claims go back once the row has been silent long enough, as after a crash.
        warn!(
            ?grace,
            "batches still sending at the end of the grace period were left"
        );
    }
    deliverer.mailer.close().await;
    jobs
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed at the call, not at the first
/// poll, so a signal that comes before the future is awaited is not lost (nor fatal).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        // A handler that could not be installed leaves its signal's default action.
        async fn recv(s: std::io::Result<tokio::signal::unix::Signal>) {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
        async move {
            tokio::select! {
                () = recv(term) => {},
                () = recv(int) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
