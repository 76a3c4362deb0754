//! `bucketgate-authz`: wiring only (see the crate docs). `serve` runs the
//! broker; `creds …` and `anonymous …` manage the SQLite store.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bucketgate_authz::admin::{self, AppState};
use bucketgate_authz::broker::{Broker, SnapshotHandle};
use bucketgate_authz::cli::{Cli, Command, ServeArgs};
use bucketgate_authz::config::{FEED_TOKEN_ENV, MIN_FEED_TOKEN_LEN, ServiceConfig};
use bucketgate_authz::metrics::Metrics;
use bucketgate_authz::store::seal::{KEY_ENV, Sealer};
use bucketgate_authz::store::{self, Store};
use bucketgate_authz::tls::{self, ServerTls};
use bucketgate_authz::usage::{Scanner, UsageHandle};
use bucketgate_authz::{cli, ext_authz, kube_source, upstream};
use bucketgate_core::SecretKey;
use clap::Parser;
use tokio::sync::watch;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if serving { "info" } else { "warn" })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bucketgate-authz: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = match &cli.config {
        Some(p) => ServiceConfig::load(p).map_err(anyhow::Error::msg)?,
        None => ServiceConfig::default(),
    };
    if let Some(db) = cli.database {
        config.database = db;
    }
    if let Some(k) = cli.key_file {
        config.key_file = Some(k);
    }
    match cli.command {
        Command::Creds(cmd) => {
            let mut store = open_store(&config)?;
            cli::run_creds(cmd, &mut store, unix_now(), &mut std::io::stdout().lock())
        }
        Command::Anonymous(cmd) => {
            let store = open_store(&config)?;
            cli::run_anonymous(
                cmd,
                &store,
                &config.backend_names(),
                unix_now(),
                &mut std::io::stdout().lock(),
            )
        }
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(config, args)),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn open_store(config: &ServiceConfig) -> anyhow::Result<Store> {
    let env_key = std::env::var(KEY_ENV).ok();
    let sealer = Sealer::load(env_key.as_deref(), &config.key_file())?;
    let store = Store::open(&config.database, sealer)
        .with_context(|| format!("opening the credential store {}", config.database.display()))?;
    Ok(store)
}

fn feed_token(config: &ServiceConfig) -> anyhow::Result<Option<SecretKey>> {
    let token = match &config.feed.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("feed token file {}", p.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var(FEED_TOKEN_ENV).ok(),
    };
    match token {
        None => Ok(None),
        Some(t) if t.len() < MIN_FEED_TOKEN_LEN => {
            bail!("the feed token must be at least {MIN_FEED_TOKEN_LEN} characters")
        }
        Some(t) => Ok(Some(SecretKey::new(t))),
    }
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn shutdown_signal() {
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

async fn serve(mut config: ServiceConfig, args: ServeArgs) -> anyhow::Result<()> {
    if let Some(a) = args.http_listen {
        config
            .check_listener("--http-listen", a)
            .map_err(anyhow::Error::msg)?;
        config.http_listen = a;
    }
    if args.kube {
        config.kubernetes.enabled = true;
    }
    if let Some(ns) = args.kube_namespace {
        config.kubernetes.namespace = Some(ns);
    }
    if let Some(ms) = args.store_poll_ms {
        config.store_poll_ms = ms;
    }
    config.validate().map_err(anyhow::Error::msg)?;
    // The listener rule and the TLS files are checked before anything starts.
    if let Some(addr) = args.grpc_listen {
        config
            .check_listener("--grpc-listen", addr)
            .map_err(anyhow::Error::msg)?;
    }
    let (http_tls, grpc_tls) = match &config.tls {
        Some(files) => (
            Some(ServerTls::load(files, tls::ALPN_HTTP1)?),
            Some(ServerTls::load(files, tls::ALPN_H2)?),
        ),
        None => (None, None),
    };

    let metrics = Metrics::new();
    let snapshot = SnapshotHandle::default();
    let broker = Broker::new(snapshot.clone(), metrics.clone(), config.kubernetes.enabled);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    // Credential sources: SQLite always, Kubernetes when enabled.
    let store = open_store(&config)?;
    tracing::info!(path = %config.database.display(), schema = store.schema_version()?,
        "credential store open");
    tasks.spawn(store::sync::run(
        store,
        broker.clone(),
        Duration::from_millis(config.store_poll_ms),
        stop_rx.clone(),
    ));
    if config.kubernetes.enabled {
        let client = kube::Client::try_default()
            .await
            .context("Kubernetes client (--kube)")?;
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> = match &config.kubernetes.namespace
        {
            Some(ns) => kube::Api::namespaced(client, ns),
            None => kube::Api::default_namespaced(client),
        };
        tasks.spawn(kube_source::run(
            api.clone(),
            config.kubernetes.label_selector.clone(),
            broker.clone(),
            stop_rx.clone(),
        ));
        tasks.spawn(kube_source::run_anonymous(
            api,
            config.kubernetes.anonymous_label_selector.clone(),
            broker.clone(),
            stop_rx.clone(),
        ));
    }

    // Upstream admin credentials per backend.
    let upstream_creds = upstream::start(
        &config.backends,
        &|k| std::env::var(k).ok(),
        stop_rx.clone(),
    )
    .await?;

    // Quota usage: scanned when a backend has an endpoint; else every
    // scope's usage stays unknown (the data planes' quota_when_unknown).
    let usage = UsageHandle::new();
    if config.scans_usage() {
        let scanner = Scanner::new(
            &config,
            broker.clone(),
            upstream_creds.clone(),
            usage.clone(),
            metrics.clone(),
        );
        tasks.spawn(scanner.run(stop_rx.clone()));
    } else {
        tracing::info!("no backend has an endpoint: quota usage is not scanned");
    }

    // Feed, usage report, health, readiness, metrics.
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("binding {}", config.http_listen))?;
    tracing::info!(addr = %listener.local_addr()?, mtls = http_tls.is_some(),
        "HTTP listening (feed, /v1/usage, /healthz, /readyz, /metrics)");
    let health_listener = match config.health_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding health_listen {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "HTTP listening (/healthz, /readyz, /metrics; no feed)");
            Some(l)
        }
        None => None,
    };
    let state = AppState {
        broker: broker.clone(),
        upstream: upstream_creds.clone(),
        usage: usage.clone(),
        metrics: metrics.clone(),
        feed_token: feed_token(&config)?,
        feed_sigv2: config.feed.sigv2_keys,
    };
    if state.feed_token.is_none() {
        tracing::warn!("no feed token ({FEED_TOKEN_ENV} or feed.token_file): the feed is off");
    }
    if let Some(l) = health_listener {
        let (state, health_stop) = (state.clone(), stopped(stop_rx.clone()));
        tasks.spawn(async move {
            if let Err(e) = admin::serve_health(l, state, health_stop).await {
                tracing::error!(error = %e, "health HTTP server failed");
            }
        });
    }
    let http_stop = stopped(stop_rx.clone());
    tasks.spawn(async move {
        let served = match http_tls {
            Some(tls) => admin::serve_tls(listener, tls, state, http_stop).await,
            None => admin::serve(listener, state, http_stop).await,
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });

    // Envoy ext_authz gRPC server: the live snapshot, quota usage, the
    // refreshed admin credentials, the `ext_authz` section of the config.
    let ext_authz_service = |flag: &str| -> anyhow::Result<ext_authz::Service> {
        let section = config
            .ext_authz
            .as_ref()
            .with_context(|| format!("{flag} needs an `ext_authz` section in the config"))?;
        Ok(ext_authz::Service::with_admin(
            ext_authz::Config::from_value(section)?,
            snapshot.clone(),
            usage.clone(),
            metrics.clone(),
            upstream_creds.clone(),
        ))
    };
    if let Some(path) = args.grpc_listen_unix {
        let service = ext_authz_service("--grpc-listen-unix")?;
        let listener = ext_authz::bind_unix(&path)?;
        tracing::info!(path = %path.display(), "ext_authz gRPC listening on a Unix socket");
        let grpc_stop = stopped(stop_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = ext_authz::serve_unix_on(listener, service, grpc_stop).await {
                tracing::error!(error = %e, "ext_authz server failed");
            }
        });
    }
    if let Some(addr) = args.grpc_listen {
        let service = ext_authz_service("--grpc-listen")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, mtls = grpc_tls.is_some(), "ext_authz gRPC listening");
        let grpc_stop = stopped(stop_rx.clone());
        tasks.spawn(async move {
            let served = match grpc_tls {
                Some(tls) => ext_authz::serve_tls_on(listener, tls, service, grpc_stop).await,
                None => ext_authz::serve_on(listener, service, grpc_stop).await,
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "ext_authz server failed");
            }
        });
    }

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}
