//! `bucketgate-authz`: see the crate docs.

// ---------------------------------------------------------------------------
// TEMPORARY (ext_authz branch): a minimal `serve` that loads credentials and
// backend admin keys from a static feed-format JSON file into a Snapshot and
// serves ext_authz (plus /metrics) until SIGTERM/Ctrl-C. To be replaced by
// the broker's `serve` subcommand, which calls `ext_authz::serve` with its
// live snapshot. Used by tests/e2e and `make demo MODE=ext-authz`.
//
//   bucketgate-authz serve --ext-authz-listen 127.0.0.1:9191 \
//       --ext-authz-config authz.json --static-credentials feed.json \
//       [--metrics-listen 127.0.0.1:9192]
// ---------------------------------------------------------------------------

use std::net::SocketAddr;
use std::process::ExitCode;

use bucketgate_authz::broker::{Snapshot, SnapshotHandle};
use bucketgate_authz::ext_authz::{self, AdminSource};
use bucketgate_authz::metrics::Metrics;
use bucketgate_core::feed::FeedSnapshot;
use bucketgate_core::resign::AdminCredentials;

struct StaticArgs {
    listen: SocketAddr,
    config: String,
    credentials: String,
    metrics: Option<SocketAddr>,
}

fn parse_args(args: &[String]) -> Result<StaticArgs, String> {
    let mut listen = None;
    let mut config = None;
    let mut credentials = None;
    let mut metrics = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let addr = || {
            value
                .parse::<SocketAddr>()
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--ext-authz-listen" => listen = Some(addr()?),
            "--metrics-listen" => metrics = Some(addr()?),
            "--ext-authz-config" => config = Some(value.clone()),
            "--static-credentials" => credentials = Some(value.clone()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(StaticArgs {
        listen: listen.ok_or("--ext-authz-listen is required")?,
        config: config.ok_or("--ext-authz-config is required")?,
        credentials: credentials.ok_or("--static-credentials is required")?,
        metrics,
    })
}

/// Admin keys from the static feed file (the broker's handle replaces it).
struct FeedAdmins(Vec<(String, AdminCredentials)>);

impl AdminSource for FeedAdmins {
    fn current(&self, backend: &str) -> Option<AdminCredentials> {
        self.0
            .iter()
            .find(|(name, _)| name == backend)
            .map(|(_, c)| c.clone())
    }
}

async fn serve_static(args: StaticArgs) -> Result<(), String> {
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("{p}: {e}"));
    let config = ext_authz::Config::from_json(&read(&args.config)?).map_err(|e| e.to_string())?;
    let feed = FeedSnapshot::parse(&read(&args.credentials)?)?;
    let snapshot = SnapshotHandle::new(Snapshot {
        version: 1,
        credentials: feed.credential_map(),
    });
    let admins = FeedAdmins(
        feed.backends
            .iter()
            .map(|b| (b.name.clone(), b.admin_credentials()))
            .collect(),
    );
    let metrics = Metrics::new();
    if let Some(addr) = args.metrics {
        let m = metrics.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let m = m.clone();
                async move { m.render() }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("{}: {e}", args.listen))?;
    tracing::info!("ext_authz listening on {}", args.listen);
    let service = ext_authz::Service::with_admin(config, snapshot, metrics, admins);
    ext_authz::serve_on(listener, service, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((cmd, rest)) if cmd == "serve" => {
            let parsed = match parse_args(rest) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("bucketgate-authz serve: {e}");
                    return ExitCode::from(2);
                }
            };
            match serve_static(parsed).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bucketgate-authz: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!(
                "usage: bucketgate-authz serve --ext-authz-listen ADDR --ext-authz-config FILE --static-credentials FILE [--metrics-listen ADDR]"
            );
            ExitCode::from(2)
        }
    }
}
// --------------------------- end TEMPORARY --------------------------------
