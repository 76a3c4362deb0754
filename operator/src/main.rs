//! `bucketgate-operator`: `crd` prints the CRDs; `run` starts the BucketClaim
//! and S3Backend controllers and, with `--usage-url`, the usage poller
//! (leader-elected, `/metrics`, `/healthz`, `/readyz`); `webhook` serves the
//! admission webhooks over TLS (`/validate`, `/mutate`, `/healthz`). Wiring
//! only: the library does the work.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bucketgate_core::contract::{LABEL_ROLE, SELECTOR_INTERNAL};
use bucketgate_operator::backend;
use bucketgate_operator::crd::{BucketClaim, S3Backend};
use bucketgate_operator::metrics::Metrics;
use bucketgate_operator::reconcile::{
    self, Context, FIELD_MANAGER, Settings, SystemClock, claim_for_secret, os_minter,
};
use bucketgate_operator::s3::S3Buckets;
use bucketgate_operator::usage::{self, UsageSource};
use bucketgate_operator::webhook::inject::{
    DEFAULT_GATEWAY_ENDPOINT, DEFAULT_SIDECAR_HEALTH_PORT, DEFAULT_SIDECAR_IMAGE,
    DEFAULT_SIDECAR_PORT,
};
use bucketgate_operator::webhook::{Hooks, Inject, KubeLookup, Webhook, serve_tls};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, controller, watcher};
use kube::{Api, Client};

#[derive(Debug, Parser)]
#[command(name = "bucketgate-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the BucketClaim and S3Backend CRDs as YAML (or write them to
    /// `--out DIR` as bucketclaim.yaml and s3backend.yaml).
    Crd {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run the controller.
    Run {
        /// Namespace of internal Secrets, anonymous bindings, admin Secrets and the lease.
        #[arg(long, env = "POD_NAMESPACE", default_value = "stowage-system")]
        namespace: String,
        /// AWS_ENDPOINT_URL written to consumer Secrets.
        #[arg(
            long,
            env = "BUCKETGATE_PROXY_ENDPOINT",
            default_value = "http://stowage.stowage-system.svc.cluster.local:8090"
        )]
        proxy_endpoint: String,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080")]
        http: SocketAddr,
        /// Leader-election identity (the pod name).
        #[arg(long, env = "POD_NAME", default_value = "bucketgate-operator")]
        identity: String,
        /// The broker's usage endpoint (http[s]://HOST[:PORT]/v1/usage):
        /// copied onto BucketClaim `status.usage`, with Events when a claim
        /// crosses its quota. Absent: off.
        #[arg(long, requires = "usage_token_file")]
        usage_url: Option<String>,
        /// File holding the usage endpoint's bearer token (the broker's feed
        /// token); re-read at each poll.
        #[arg(long)]
        usage_token_file: Option<PathBuf>,
        /// Seconds between polls of `--usage-url`.
        #[arg(long, default_value_t = usage::DEFAULT_POLL_SECONDS,
              value_parser = clap::value_parser!(u64).range(1..))]
        usage_poll_seconds: u64,
    },
    /// Serve the admission webhooks over TLS: `/validate` (BucketClaim,
    /// S3Backend) and `/mutate` (Pods annotated `broker.stowage.io/inject`).
    Webhook {
        #[arg(long, env = "POD_NAMESPACE", default_value = "stowage-system")]
        namespace: String,
        #[arg(long, default_value = "0.0.0.0:8443")]
        listen: SocketAddr,
        #[arg(long, default_value = "/tls/tls.crt")]
        cert: PathBuf,
        #[arg(long, default_value = "/tls/tls.key")]
        key: PathBuf,
        /// How often the certificate and key are re-read (cert-manager
        /// renews the mounted Secret in place).
        #[arg(long, default_value_t = 300)]
        reload_seconds: u64,
        /// The gateway Service: `AWS_ENDPOINT_URL_S3` of `inject: endpoint`
        /// Pods and the upstream of injected sidecars (http[s]://HOST[:PORT]).
        #[arg(long, env = "BUCKETGATE_PROXY_ENDPOINT", default_value = DEFAULT_GATEWAY_ENDPOINT)]
        gateway_endpoint: String,
        /// Image of the injected sidecar (Envoy).
        #[arg(long, default_value = DEFAULT_SIDECAR_IMAGE)]
        sidecar_image: String,
        /// Port the sidecar listens on, on 127.0.0.1 (`AWS_ENDPOINT_URL_S3=http://localhost:PORT`).
        #[arg(long, default_value_t = DEFAULT_SIDECAR_PORT)]
        sidecar_port: u16,
        /// Port of the sidecar's health listener (0.0.0.0, `GET /ready`) and
        /// its startup and readiness probes; 0 = neither.
        #[arg(long, default_value_t = DEFAULT_SIDECAR_HEALTH_PORT)]
        sidecar_health_port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Crd { out } = cli.command {
        return report(print_crds(out));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(Err(e.into())),
    };
    report(rt.block_on(async move {
        match cli.command {
            Command::Run {
                namespace,
                proxy_endpoint,
                http,
                identity,
                usage_url,
                usage_token_file,
                usage_poll_seconds,
            } => {
                let usage = match (usage_url, usage_token_file) {
                    (Some(url), Some(token)) => Some((
                        UsageSource::new(&url, token)?,
                        Duration::from_secs(usage_poll_seconds),
                    )),
                    _ => None,
                };
                run(namespace, proxy_endpoint, http, identity, usage).await
            }
            Command::Webhook {
                namespace,
                listen,
                cert,
                key,
                reload_seconds,
                gateway_endpoint,
                sidecar_image,
                sidecar_port,
                sidecar_health_port,
            } => {
                let inject = Inject::new(
                    &gateway_endpoint,
                    &sidecar_image,
                    sidecar_port,
                    sidecar_health_port,
                )?;
                let client = Client::try_default().await?;
                let state = Hooks {
                    validate: Webhook {
                        lookup: Arc::new(KubeLookup(client)),
                        operator_namespace: namespace,
                    },
                    inject,
                };
                serve_tls(
                    state,
                    listen,
                    cert,
                    key,
                    Duration::from_secs(reload_seconds.max(1)),
                )
                .await?;
                Ok(())
            }
            Command::Crd { .. } => Ok(()),
        }
    }))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn report(r: Result<(), BoxError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_crds(out: Option<PathBuf>) -> Result<(), BoxError> {
    let docs = bucketgate_operator::crd::crd_yaml()?;
    match out {
        Some(dir) => {
            for (file, doc) in bucketgate_operator::crd::CRD_FILES.iter().zip(docs.iter()) {
                std::fs::write(dir.join(file), doc)?;
            }
        }
        None => print!("{}---\n{}", docs[0], docs[1]),
    }
    Ok(())
}

async fn run(
    namespace: String,
    proxy_endpoint: String,
    http: SocketAddr,
    identity: String,
    usage: Option<(UsageSource, Duration)>,
) -> Result<(), BoxError> {
    let client = Client::try_default().await?;
    let metrics = Metrics::new()?;

    // Health and metrics, served whether or not this replica leads.
    let m = metrics.clone();
    let app = Router::new()
        .route("/metrics", get(move || async move { m.render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(http).await?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });

    // Leader election: only the lease holder runs the controller.
    let lease = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "bucketgate-operator")
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(LEASE_GRACE_SECONDS)
        .with_field_manager(FIELD_MANAGER)
        .build()
        .await?;
    let (manager_leading, lease_task) = lease.watch().await;
    // Lead only while the lease was renewed within duration - grace (see leader.rs).
    let mut leading = bucketgate_operator::leader::guard(
        Api::namespaced(client.clone(), &namespace),
        "bucketgate-operator".into(),
        identity.clone(),
        manager_leading,
        Duration::from_secs(LEASE_SECONDS - LEASE_GRACE_SECONDS),
        Duration::from_secs(1),
    );

    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(identity.clone()),
            },
        ),
        client: client.clone(),
        settings: Settings {
            operator_namespace: namespace.clone(),
            proxy_endpoint,
        },
        clock: Arc::new(SystemClock),
        buckets: Arc::new(S3Buckets),
        minter: os_minter(),
        metrics: metrics.clone(),
    });

    loop {
        while !*leading.borrow_and_update() {
            metrics.leader.set(0);
            tracing::info!("waiting for the leader lease");
            leading.changed().await?;
        }
        metrics.leader.set(1);
        tracing::info!(%identity, "leading: starting the controllers");
        // The controllers and the usage poller stop when the lease is lost.
        let claim_controller = {
            let claims: Api<BucketClaim> = Api::all(client.clone());
            let consumer: Api<Secret> = Api::all(client.clone());
            let internal: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            Controller::new(claims, watcher::Config::default())
                .owns(
                    consumer,
                    watcher::Config::default().labels(bucketgate_core::contract::SELECTOR_CONSUMER),
                )
                .watches(
                    internal,
                    watcher::Config::default().labels(SELECTOR_INTERNAL),
                    |s| claim_for_secret(&s),
                )
                .trigger_backoff(bucketgate_operator::watch_backoff())
                .graceful_shutdown_on(lease_lost(leading.clone()))
                .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
                .for_each(|r| async move {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "reconcile");
                    }
                })
        };
        let backend_controller = {
            let backends: Api<S3Backend> = Api::all(client.clone());
            let claims: Api<BucketClaim> = Api::all(client.clone());
            // Admin and CA bundle Secrets live in the operator namespace; the
            // operator's own Secrets (they carry the role label) are skipped.
            let referenced: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            let ctrl = Controller::new(backends, watcher::Config::default());
            let store = ctrl.store();
            ctrl.watches(claims, watcher::Config::default(), |c| {
                Some(backend::backend_for_claim(&c))
            })
            .watches(
                referenced,
                watcher::Config::default().labels(&format!("!{LABEL_ROLE}")),
                move |s| {
                    let state = store.state();
                    backend::backends_for_secret(state.iter().map(|b| b.as_ref()), &s)
                },
            )
            // Claim churn (every status write) probes each backend at most
            // once per debounce window.
            .with_config(controller::Config::default().debounce(Duration::from_secs(2)))
            .trigger_backoff(bucketgate_operator::watch_backoff())
            .graceful_shutdown_on(lease_lost(leading.clone()))
            .run(backend::reconcile, backend::error_policy, ctx.clone())
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "S3Backend reconcile");
                }
            })
        };
        let usage_poller = async {
            if let Some((source, every)) = &usage {
                tracing::info!(
                    every_seconds = every.as_secs(),
                    "polling the broker's usage"
                );
                usage::run(
                    client.clone(),
                    ctx.recorder.clone(),
                    metrics.clone(),
                    source.clone(),
                    *every,
                    leading.clone(),
                )
                .await;
            }
        };
        futures::join!(claim_controller, backend_controller, usage_poller);
        metrics.leader.set(0);
        if lease_task.is_finished() {
            return Err("leader election task ended".into());
        }
        tracing::warn!("lost the leader lease: controllers and usage poller stopped");
    }
}

/// The leader lease: held for 15 s, renewed 5 s before it runs out.
const LEASE_SECONDS: u64 = 15;
const LEASE_GRACE_SECONDS: u64 = 5;

/// Resolves once `leading` turns false (or its sender is gone).
async fn lease_lost(mut leading: tokio::sync::watch::Receiver<bool>) {
    while *leading.borrow_and_update() {
        if leading.changed().await.is_err() {
            break;
        }
    }
}
