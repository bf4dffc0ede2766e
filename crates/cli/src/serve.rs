//! `aragora serve` (API + workers) and `aragora worker` (workers only).

use crate::config::{self, ServeArgs};
use anyhow::{Context, Result};
use aragora_queue::{Queue, WorkerHandle, spawn_worker};
use aragora_server::jobs::WorkerSettings;
use aragora_server::state::AppState;
use aragora_server::{ServerConfig, router};
use aragora_store::tokens::{self, NewToken};
use aragora_store::{Db, DbOptions, migrate};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(args: ServeArgs, http: bool, workers: bool) -> Result<()> {
    config::init_logging(args.common.log_format);
    // Installed first, so a signal that arrives during start-up still shuts down gracefully.
    let signals = shutdown_signals()?;
    let workers = workers && !(http && args.no_workers);
    let kinds = args.worker_kinds()?;
    let webhook_settings = args.webhook_settings()?;
    // The listen address is checked and bound before anything else happens (migrations, the
    // first-start admin token, workers), so a bad `--bind` or a port in use changes nothing.
    let listener = if http {
        Some(listen(&args.bind).await?)
    } else {
        None
    };
    let url = args.common.database_url()?;
    let db = Db::connect(
        &url,
        &DbOptions {
            max_connections: args.db_max_connections,
            sqlite_max_page_count: args.sqlite_max_page_count,
            ..Default::default()
        },
    )
    .await
    .with_context(|| format!("cannot open database {}", config::redact(&url)))?;
    migrate::run(&db).await.context("migrating the database")?;
    tracing::info!(database = db.dialect().as_str(), "database ready");

    if http {
        first_start_admin_token(&db, &args.common.data_dir).await?;
    }

    let queue = Queue::new(db.clone());
    let metrics = aragora_server::metrics::install_recorder();
    let server_config = ServerConfig {
        max_body_bytes: args.max_body_bytes,
        metrics_token: args.metrics_token.clone(),
        webhook_allow_cidrs: args.webhook_allow_cidrs.clone(),
        provider_allow_cidrs: args.provider_allow_cidrs.clone(),
        webhooks: webhook_settings,
        marketplace: marketplace_config(&args, db.dialect()),
        cdc: aragora_server::config::CdcConfig {
            health_probe_timeout: Duration::from_secs(args.cdc_health_timeout_secs),
            teardown_timeout: Duration::from_secs(args.cdc_teardown_timeout_secs),
        },
        ..Default::default()
    };
    let state = AppState::new(db.clone(), queue.clone(), server_config, Some(metrics));
    let shutdown = CancellationToken::new();
    queue.spawn_pg_listener(shutdown.clone());

    let mut handles: Vec<WorkerHandle> = Vec::new();
    let mut services = Vec::new();
    if workers {
        if kinds.contains(&"cdc") {
            services = aragora_server::jobs::services(&state, shutdown.clone());
        }
        let settings = WorkerSettings {
            webhook_max_concurrent: args.webhook_max_concurrent,
            batch_max_concurrent_debates: args.batch_max_concurrent_debates,
            debate_max_concurrent: args.debate_max_concurrent,
            debate_lease: Duration::from_secs(args.debate_lease_secs),
            shutdown: shutdown.clone(),
        };
        for (mut cfg, handler) in aragora_server::jobs::all(&state, &settings) {
            if !kinds.contains(&cfg.kind.as_str()) {
                continue;
            }
            cfg.shutdown_deadline = Duration::from_secs(args.shutdown_grace_secs);
            if let Some(id) = &args.worker_id {
                aragora_queue::reserve_worker_id(&db, id, &cfg)
                    .await
                    .with_context(|| format!("--worker-id {id}"))?;
                cfg.id = Some(id.clone());
            }
            handles.push(spawn_worker(queue.clone(), cfg, handler, shutdown.clone()));
        }
        tracing::info!(count = handles.len(), "workers started");
    }

    let server = if let Some(listener) = listener {
        let addr = listener.local_addr()?;
        println!("aragora listening on http://{addr}");
        let app = router(state.clone());
        let stop = shutdown.clone();
        Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }))
    } else {
        println!("aragora worker running ({} workers)", handles.len());
        None
    };

    signals.await;
    tracing::info!(
        "shutting down: no new work; in-flight jobs get {}s",
        args.shutdown_grace_secs
    );
    shutdown.cancel();
    for h in handles {
        h.join().await;
    }
    for s in services {
        let _ = s.await;
    }
    if let Some(server) = server {
        server.await??;
    }
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Parses `--bind` (`host:port`, the host an IP address or a name) and binds it.
async fn listen(bind: &str) -> Result<tokio::net::TcpListener> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(bind)
        .await
        .with_context(|| {
            format!("--bind: `{bind}` is not a listen address (host:port, e.g. 127.0.0.1:8080)")
        })?
        .collect();
    if addrs.is_empty() {
        anyhow::bail!("--bind: `{bind}` resolves to no address");
    }
    tokio::net::TcpListener::bind(addrs.as_slice())
        .await
        .with_context(|| format!("--bind: cannot listen on {bind}"))
}

fn marketplace_config(
    args: &ServeArgs,
    dialect: aragora_store::Dialect,
) -> aragora_server::config::MarketplaceConfig {
    let mut c = aragora_server::config::MarketplaceConfig {
        publish_limit: args.marketplace_publish_limit,
        rate_limit: args.marketplace_rate_limit,
        review_limit: args.marketplace_review_limit,
        ..Default::default()
    };
    c.template_limits.max_bytes = args.marketplace_max_template_bytes;
    let default_ms = match dialect {
        aragora_store::Dialect::Sqlite => 60_000,
        aragora_store::Dialect::Postgres => 1_000,
    };
    c.list_cache_ttl =
        std::time::Duration::from_millis(args.marketplace_list_cache_ms.unwrap_or(default_ms));
    c
}

/// On the very first start (no token exists), creates an admin token, prints it once and writes it
/// to `<data-dir>/admin-token` with mode 0600.
async fn first_start_admin_token(db: &Db, data_dir: &std::path::Path) -> Result<()> {
    if !tokens::none_exist(db).await? {
        return Ok(());
    }
    let (info, token) = tokens::create(
        db,
        &NewToken {
            name: "admin".into(),
            workspace: "default".into(),
            user: Some("admin".into()),
            role: Some(aragora_core::auth::Role::Admin),
            permissions: vec![],
        },
    )
    .await?;
    config::ensure_data_dir(data_dir)?;
    let path = data_dir.join("admin-token");
    write_private(&path, &format!("{token}\n"))?;
    println!(
        "created admin token {} (workspace default); it is shown once here and saved to {}",
        info.id,
        path.display()
    );
    println!("admin token: {token}");
    Ok(())
}

fn write_private(path: &std::path::Path, content: &str) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM.
fn shutdown_signals() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
