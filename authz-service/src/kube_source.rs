//! Internal Secrets from Kubernetes: a kube-rs reflector over the Secrets
//! matching the label selector (`broker.stowage.io/role=virtual-credential`)
//! in the operator namespace. Each Secret is parsed with
//! `bucketgate_core::contract::parse_internal` — the one place that knows the
//! wire names — and the complete set goes to the [`Broker`] after the first
//! full list and after every watch event, so a deleted Secret leaves the
//! snapshot as soon as its event arrives.
//!
//! While the API server is unreachable the watcher backs off and retries;
//! the reflector store and the snapshot keep their last content, so known
//! keys keep verifying.

use std::collections::{BTreeMap, HashMap};

use bucketgate_core::contract;
use bucketgate_core::credential::Credential;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};

use crate::broker::{Broker, Source};

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An internal Secret as a credential, through the contract module.
/// Non-UTF-8 data values are an error (the contract is text).
pub fn parse_secret(secret: &Secret) -> Result<contract::InternalRecord, String> {
    let mut data = BTreeMap::new();
    for (k, v) in secret.data.iter().flatten() {
        let s = String::from_utf8(v.0.clone()).map_err(|_| format!("data key {k} is not UTF-8"))?;
        data.insert(k.clone(), s);
    }
    contract::parse_internal(secret.labels(), secret.annotations(), &data)
        .map_err(|e| e.to_string())
}

/// Turns the reflector's content into credentials, logging each broken
/// Secret once per resource version.
#[derive(Debug, Default)]
struct Parser {
    logged: HashMap<String, String>,
}

impl Parser {
    fn credentials(&mut self, store: &Store<Secret>) -> Vec<(String, Credential)> {
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for s in store.state() {
            let name = s.name_any();
            let rv = s.resource_version().unwrap_or_default();
            let first_time = self.logged.get(&name) != Some(&rv);
            seen.insert(name.clone(), rv);
            match parse_secret(&s) {
                Ok(rec) => {
                    if first_time {
                        for w in &rec.warnings {
                            tracing::warn!(secret = %name, warning = %w,
                                "internal Secret parsed with a warning (failing closed)");
                        }
                    }
                    out.push((name, rec.credential));
                }
                Err(e) => {
                    if first_time {
                        tracing::warn!(secret = %name, error = %e,
                            "ignoring an internal Secret that does not follow the contract");
                    }
                }
            }
        }
        self.logged = seen;
        out
    }
}

/// How the watch retries while the API server is unreachable: 100 ms
/// doubling to 500 ms, plus up to as much again of jitter (so at most 1 s
/// apart), reset after 2 minutes of health.
/// kube-runtime's default (client-go's) grows to 30 s, so after a long
/// outage a key revoked meanwhile stayed valid for up to 30 s after the API
/// server came back (found with a real one, tests/kube/test_faults.py);
/// revocation has to land within 2 s. One watch per broker replica makes
/// the faster retry cheap for the API server.
fn watch_backoff() -> impl kube::runtime::utils::Backoff {
    kube::runtime::utils::ResetTimerBackoff::new(
        watcher::ExponentialBackoff::from(
            backon::ExponentialBuilder::default()
                .with_min_delay(std::time::Duration::from_millis(100))
                .with_max_delay(std::time::Duration::from_millis(500))
                .with_factor(2.0)
                .with_jitter()
                .without_max_times(),
        ),
        std::time::Duration::from_secs(120),
    )
}

/// Runs the reflector until `stop` changes or the stream ends.
pub async fn run(
    api: Api<Secret>,
    label_selector: String,
    broker: Broker,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (reader, writer) = reflector::store::<Secret>();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default().labels(&label_selector)),
    )
    .backoff(watch_backoff());
    let mut stream = std::pin::pin!(stream);
    let mut parser = Parser::default();
    let mut synced = false;
    let mut failing = false;
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = stop.changed() => return,
        };
        match event {
            Some(Ok(Event::Init | Event::InitApply(_))) => {}
            Some(Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_))) => {
                if !synced {
                    tracing::info!("Kubernetes internal Secrets synced");
                    synced = true;
                }
                if failing {
                    tracing::info!("Kubernetes watch recovered");
                    failing = false;
                }
                broker.set_kubernetes(parser.credentials(&reader));
                broker.record_sync(Source::Kubernetes, true, unix_now());
            }
            Some(Err(e)) => {
                if !failing {
                    tracing::warn!(error = %e,
                        "Kubernetes watch failed; serving the cached Secrets and retrying");
                    failing = true;
                }
                broker.record_sync(Source::Kubernetes, false, unix_now());
            }
            None => {
                tracing::error!("Kubernetes watch stream ended");
                broker.record_sync(Source::Kubernetes, false, unix_now());
                return;
            }
        }
    }
}
