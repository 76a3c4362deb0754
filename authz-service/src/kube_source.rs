//! Internal Secrets and anonymous bindings from Kubernetes: kube-rs
//! reflectors over the Secrets matching a label selector in the operator
//! namespace — [`run`] for the internal Secrets
//! (`broker.stowage.io/role=virtual-credential`), [`run_anonymous`] for the
//! anonymous-binding Secrets (`broker.stowage.io/role=anonymous-binding`).
//! Each Secret is parsed with `bucketgate_core::contract` (`parse_internal`,
//! `parse_anonymous`) — the one place that knows the wire names — and the
//! complete set goes to the [`Broker`] after the first full list (possibly
//! empty) and after every watch event, so a deleted Secret leaves the
//! snapshot as soon as its event arrives. A Secret that does not follow the
//! contract is skipped and logged once per resource version.
//!
//! While the API server is unreachable the watcher backs off and retries;
//! the reflector store and the snapshot keep their last content, so known
//! keys keep verifying and known bindings keep serving.

use std::collections::{BTreeMap, HashMap};

use bucketgate_core::contract;
use bucketgate_core::credential::{AnonymousBinding, Credential};
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

/// A Secret's data as text; non-UTF-8 values are an error (the contract is
/// text).
fn secret_data(secret: &Secret) -> Result<BTreeMap<String, String>, String> {
    let mut data = BTreeMap::new();
    for (k, v) in secret.data.iter().flatten() {
        let s = String::from_utf8(v.0.clone()).map_err(|_| format!("data key {k} is not UTF-8"))?;
        data.insert(k.clone(), s);
    }
    Ok(data)
}

/// An internal Secret as a credential, through the contract module.
/// Non-UTF-8 data values are an error (the contract is text).
pub fn parse_secret(secret: &Secret) -> Result<contract::InternalRecord, String> {
    contract::parse_internal(secret.labels(), secret.annotations(), &secret_data(secret)?)
        .map_err(|e| e.to_string())
}

/// An anonymous-binding Secret as the binding the data plane enforces,
/// through the contract module.
pub fn parse_anonymous_secret(secret: &Secret) -> Result<AnonymousBinding, String> {
    let b = contract::parse_anonymous(secret.labels(), &secret_data(secret)?)
        .map_err(|e| e.to_string())?;
    Ok(AnonymousBinding {
        bucket: b.scope.bucket,
        backend: b.scope.backend,
        per_source_ip_rps: b.per_source_ip_rps,
    })
}

/// A parsed Secret and its non-fatal warnings.
type Parsed<T> = (T, Vec<String>);

/// What one reflector reads: how its Secrets parse (with non-fatal
/// warnings) and where the parsed set goes.
struct Kind<T> {
    /// For logs: "internal", "anonymous-binding".
    what: &'static str,
    parse: fn(&Secret) -> Result<Parsed<T>, String>,
    publish: fn(&Broker, Vec<(String, T)>),
}

static INTERNAL: Kind<Credential> = Kind {
    what: "internal",
    parse: parse_internal_item,
    publish: Broker::set_kubernetes,
};

static ANONYMOUS: Kind<AnonymousBinding> = Kind {
    what: "anonymous-binding",
    parse: parse_anonymous_item,
    publish: Broker::set_kubernetes_anonymous,
};

fn parse_internal_item(s: &Secret) -> Result<Parsed<Credential>, String> {
    let rec = parse_secret(s)?;
    let warnings = rec.warnings.iter().map(ToString::to_string).collect();
    Ok((rec.credential, warnings))
}

fn parse_anonymous_item(s: &Secret) -> Result<Parsed<AnonymousBinding>, String> {
    Ok((parse_anonymous_secret(s)?, Vec::new()))
}

/// Turns the reflector's content into items, logging each broken Secret
/// once per resource version.
#[derive(Debug, Default)]
struct Parser {
    logged: HashMap<String, String>,
}

impl Parser {
    fn items<T>(&mut self, store: &Store<Secret>, kind: &Kind<T>) -> Vec<(String, T)> {
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for s in store.state() {
            let name = s.name_any();
            let rv = s.resource_version().unwrap_or_default();
            let first_time = self.logged.get(&name) != Some(&rv);
            seen.insert(name.clone(), rv);
            match (kind.parse)(&s) {
                Ok((item, warnings)) => {
                    if first_time {
                        for w in &warnings {
                            tracing::warn!(secret = %name, warning = %w, kind = kind.what,
                                "Secret parsed with a warning (failing closed)");
                        }
                    }
                    out.push((name, item));
                }
                Err(e) => {
                    if first_time {
                        tracing::warn!(secret = %name, error = %e, kind = kind.what,
                            "ignoring a Secret that does not follow the contract");
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

/// Runs the reflector over the internal Secrets until `stop` changes or the
/// stream ends.
pub async fn run(
    api: Api<Secret>,
    label_selector: String,
    broker: Broker,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    watch(api, label_selector, broker, stop, &INTERNAL).await;
}

/// Runs the reflector over the anonymous-binding Secrets
/// (`contract::SELECTOR_ANONYMOUS` unless configured otherwise) until `stop`
/// changes or the stream ends. Its first list, even an empty one, counts as
/// synced for readiness.
pub async fn run_anonymous(
    api: Api<Secret>,
    label_selector: String,
    broker: Broker,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    watch(api, label_selector, broker, stop, &ANONYMOUS).await;
}

async fn watch<T>(
    api: Api<Secret>,
    label_selector: String,
    broker: Broker,
    mut stop: tokio::sync::watch::Receiver<bool>,
    kind: &Kind<T>,
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
    let what = kind.what;
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = stop.changed() => return,
        };
        match event {
            Some(Ok(Event::Init | Event::InitApply(_))) => {}
            Some(Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_))) => {
                if !synced {
                    tracing::info!(kind = what, "Kubernetes Secrets synced");
                    synced = true;
                }
                if failing {
                    tracing::info!(kind = what, "Kubernetes watch recovered");
                    failing = false;
                }
                (kind.publish)(&broker, parser.items(&reader, kind));
                broker.record_sync(Source::Kubernetes, true, unix_now());
            }
            Some(Err(e)) => {
                if !failing {
                    tracing::warn!(error = %e, kind = what,
                        "Kubernetes watch failed; serving the cached Secrets and retrying");
                    failing = true;
                }
                broker.record_sync(Source::Kubernetes, false, unix_now());
            }
            None => {
                tracing::error!(kind = what, "Kubernetes watch stream ended");
                broker.record_sync(Source::Kubernetes, false, unix_now());
                return;
            }
        }
    }
}
