//! `serve`: open the store, start the writer, bind, serve until a signal, shut down
//! gracefully (in-flight requests finish, the writer commits what it was sent).

mod connections;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::accept::DefaultAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use axum_server::Handle;

use crate::api;
use crate::app::App;
use crate::config::Config;
use crate::crypto::keys::ServiceKeys;
use crate::crypto::tokens::TokenService;
use crate::metrics::Metrics;
use crate::store::{self, Writer, WriterSettings};
use crate::tls;

/// The TLS handshake's own bound (axum-server's default), lowered to
/// `REQUEST_HEADER_TIMEOUT` when that is shorter: the handshake is part of sending a head.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long in-flight requests get after a shutdown signal.
const GRACE: Duration = Duration::from_secs(20);

pub fn build_app(
    config: Config,
    tls_fingerprint: Option<String>,
) -> Result<(Arc<App>, std::thread::JoinHandle<()>), String> {
    let (store, clock) = store::db::open_with_clock(&config.data_dir, config.max_nodes_per_pool)?;
    let store = store.with_min_free(config.storage_min_free);
    crate::app::poot::check_epoch_length(
        &store.reader().map_err(|e| e.to_string())?,
        config.poot_calculation_interval.as_micros() as u64,
    )?;
    let keys = ServiceKeys::load_or_create(&config.data_dir)?;
    let tokens = TokenService::new(&keys.jwt, config.jwt_secret.as_deref(), &config.jwt_issuer);
    // Revocations are in force from the first request (expired ones are pruned at the next
    // revocation).
    let now_us = crate::crypto::tokens::unix_now_us();
    let revoked = store
        .reader()
        .and_then(|r| r.revocations())
        .map_err(|e| format!("cannot read the token revocations: {e}"))?;
    tokens.load_revocations(revoked.into_iter().filter(|r| !r.is_expired(now_us)));
    let metrics = Arc::new(Metrics::new());
    metrics
        .writer_queue_capacity
        .set(config.writer_queue_capacity as i64);
    let mirror = crate::sync::prepare(&config, &store, &metrics.mirror);
    // Before the writer stamps a heartbeat: every one from now on reaches the PoOT
    // accumulators, and the ones stored for the epochs not closed yet are read into them
    // in the background, so closes read no heartbeat back.
    let now_us = clock.now_us();
    store.accumulators.configure(
        (
            config.poot_calculation_interval.as_micros() as u64,
            config.heartbeat_timeout.as_micros() as u64,
        ),
        now_us,
        config.poot_accumulated_epochs,
    );
    store::accumulators::rebuild_in_background(&store, now_us);
    let (writer, writer_thread) = Writer::start(
        &store,
        clock.clone(),
        WriterSettings::new(config.writer_queue_capacity)
            .commit_interval(config.commit_interval)
            .mirror(mirror)
            .observer(metrics.clone()),
    )
    .map_err(|e| e.to_string())?;
    let rate_limits = crate::app::rate_limits::RateLimits::new(config.auth_rate, config.token_rate);
    let heavy_reads = crate::app::heavy::HeavyReads::new(config.heavy_read_concurrency);
    let app = Arc::new(App {
        config,
        store,
        writer,
        verifier: crate::app::verifier::Verifier::start(),
        tokens,
        keys,
        metrics,
        clock,
        challenges: Default::default(),
        payout_wakeup: Default::default(),
        alert_wakeup: Default::default(),
        poot_closing: Default::default(),
        tls_fingerprint,
        rate_limits,
        heavy_reads,
    });
    Ok((app, writer_thread))
}

pub async fn run(config: Config) -> Result<(), String> {
    if config.payout_sink == crate::config::PayoutSinkKind::Webhook {
        // Before anything opens: a payment service the guard refuses stops the start.
        crate::payout_sink::webhook::check_at_start(
            config.payout_webhook_url.as_deref().unwrap_or_default(),
            &config.webhook_allowed_networks,
        )
        .await?;
    }
    let addr = SocketAddr::new(config.bind_address, config.port);
    let tls_paths = if config.tls_disable {
        None
    } else {
        Some(tls::certificate_paths(&config)?)
    };
    let pinned = match &tls_paths {
        Some((cert, _)) => Some(tls::pin_fingerprint(cert)?),
        None => None,
    };
    let (app, writer_thread) = build_app(config, pinned)?;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;

    let handle = Handle::new();
    // Readiness for systemd (Type=notify): the database is open and the listener bound.
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tokio::spawn(shutdown_on_signal(handle.clone()));
    #[cfg_attr(not(feature = "mongo-sync"), allow(unused_mut))]
    let mut jobs = crate::jobs::spawn_all(&app)?;
    // The mirror's sync task runs beside the timers and stops with them.
    #[cfg(feature = "mongo-sync")]
    if app
        .metrics
        .mirror
        .enabled
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        jobs.push(tokio::spawn(crate::sync::run(app.clone())));
    }
    let router = api::router(app.clone());
    // The peer address reaches handlers as `ConnectInfo` (the per-address rate limit).
    let service = connections::Capped::new(
        router.into_make_service_with_connect_info::<SocketAddr>(),
        app.config.max_connections,
    );
    let timeouts = connections::Timeouts {
        header: app.config.request_header_timeout,
        idle: app.config.idle_timeout,
    };
    let max_connections = app.config.max_connections;
    let served = match tls_paths {
        Some((cert, key)) => {
            let fingerprint = tls::fingerprint(&cert)?;
            let rustls = RustlsConfig::from_config(tls::server_config(&cert, &key)?);
            let handshake = timeouts
                .header
                .map_or(TLS_HANDSHAKE_TIMEOUT, |h| h.min(TLS_HANDSHAKE_TIMEOUT));
            let acceptor = connections::Guarded::new(
                RustlsAcceptor::new(rustls).handshake_timeout(handshake),
                timeouts,
            );
            tracing::info!(addr = %local, scheme = "https", cert = %cert.display(), sha256_fingerprint = %fingerprint, data_dir = %app.config.data_dir.display(), version = crate::VERSION, max_connections, "listening");
            axum_server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle)
                .serve(service)
                .await
        }
        None => {
            let acceptor = connections::Guarded::new(DefaultAcceptor::new(), timeouts);
            tracing::info!(addr = %local, scheme = "http", data_dir = %app.config.data_dir.display(), version = crate::VERSION, max_connections, "listening");
            axum_server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle)
                .serve(service)
                .await
        }
    };
    served.map_err(|e| format!("server failed: {e}"))?;

    for job in jobs {
        job.abort();
        let _ = job.await;
    }
    // Every request has finished; dropping the last handles closes the writer's queue,
    // and the writer commits what it was sent before it stops.
    drop(app);
    let joined = tokio::task::spawn_blocking(move || writer_thread.join());
    match tokio::time::timeout(Duration::from_secs(30), joined).await {
        Ok(_) => tracing::info!("stopped: last commit is on disk"),
        Err(_) => tracing::warn!("writer did not stop within 30 s"),
    }
    Ok(())
}

/// Resolves when Ctrl-C or SIGTERM arrives.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

async fn shutdown_on_signal(handle: Handle) {
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    handle.graceful_shutdown(Some(GRACE));
}
