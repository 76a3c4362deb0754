//! Keeps the broker's SQLite part current: checks `PRAGMA data_version`
//! every period and reloads the whole store (credentials and anonymous
//! bindings, into one snapshot) when another connection (the admin CLI)
//! committed. A failed load keeps the previous content in the
//! snapshot, marks the source unsynced and is logged when the error changes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::broker::{Broker, Source};
use crate::store::{Store, StoreError};

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One check: reloads when the data version moved since `last` (or on the
/// first call). Returns the data version seen.
pub fn sync_once(store: &Store, broker: &Broker, last: Option<i64>) -> Result<i64, StoreError> {
    let v = store.data_version()?;
    if last != Some(v) {
        let creds = store.list()?;
        let anonymous = store.list_anonymous()?;
        broker.set_sqlite_all(
            creds.into_iter().map(|s| s.credential).collect(),
            anonymous.into_iter().map(|s| s.binding).collect(),
        );
    }
    Ok(v)
}

/// Polls until `stop` changes.
pub async fn run(
    store: Store,
    broker: Broker,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let store = Arc::new(Mutex::new(store));
    let mut last: Option<i64> = None;
    let mut last_error: Option<String> = None;
    loop {
        let (s, b) = (store.clone(), broker.clone());
        let result = tokio::task::spawn_blocking(move || {
            let guard = s.lock().unwrap_or_else(|e| e.into_inner());
            sync_once(&guard, &b, last)
        })
        .await;
        match result {
            Ok(Ok(v)) => {
                if last_error.take().is_some() {
                    tracing::info!("credential store readable again");
                }
                last = Some(v);
                broker.record_sync(Source::Sqlite, true, unix_now());
            }
            Ok(Err(e)) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!(error = %msg,
                        "loading the credential store failed; serving the last good content");
                    last_error = Some(msg);
                }
                // Reload everything once the store is readable again.
                last = None;
                broker.record_sync(Source::Sqlite, false, unix_now());
            }
            Err(e) => {
                tracing::error!(error = %e, "credential store poll task failed");
                broker.record_sync(Source::Sqlite, false, unix_now());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}
