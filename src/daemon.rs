//! The composition root: the daemon's store, delivery lanes, jobs, HTTP server and puller,
//! started together and stopped by one signal.

use std::sync::Arc;

use crate::app::Deliverer;
use crate::cli::CliError;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::jobs;
use crate::service;

/// Starts the daemon and runs it until `shutdown` resolves.
pub async fn run_daemon(
    settings: Settings,
    clock: SharedClock,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CliError> {
    let settings = Arc::new(settings);
    let store = service::open_store_patiently(&settings).await?;
    let name = settings.worker_instance_name();
    let deliverer = Arc::new(Deliverer::build(
        settings.clone(),
        store,
        clock,
        name.clone(),
    )?);
    tracing::info!(
        worker = %name,
        database = %settings.database.url,
        mail = deliverer.mailer.describe(),
        templates = %settings.templates.dir.display(),
        "renewal-worker started"
    );
    // One stop signal for the worker and the HTTP server.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let http = if settings.http.bind.is_empty() {
        None
    } else {
        use secrecy::ExposeSecret;
        let listener = tokio::net::TcpListener::bind(&settings.http.bind)
            .await
            .map_err(|e| CliError::Input(format!("http.bind {}: {e}", settings.http.bind)))?;
        tracing::info!(bind = %settings.http.bind, "HTTP API listening");
        let state = Arc::new(crate::http::HttpState {
            deliverer: deliverer.clone(),
            token: settings.http.token.expose_secret().to_owned(),
        });
        Some(tokio::spawn(crate::http::serve(
            listener,
            state,
            settings.http.body_limit,
            stopped(stop_rx.clone()),
        )))
    };
    let puller = (!settings.source.url.is_empty()).then(|| {
        let d = deliverer.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(d.settings.source.interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = crate::source::pull(&d.store, &d.settings, &d.calendars, d.clock.now()).await {
                            tracing::warn!(error = %e, "pull from the marketplace failed; next try at the next interval");
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        })
    });
    jobs::run_worker(deliverer.clone(), stopped(stop_rx)).await?;
    if let Some(p) = puller {
        let _ = p.await;
    }
    if let Some(server) = http
        && let Ok(Err(e)) = server.await
    {
        tracing::warn!(error = %e, "HTTP server stopped with an error");
    }
    deliverer.store.close().await;
    tracing::info!("renewal-worker stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
