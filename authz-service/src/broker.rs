//! The merged credential snapshot. Writers (the SQLite poller, the
//! Kubernetes reflector) build a new [`Snapshot`] and [`SnapshotHandle::store`]
//! it; readers (ext_authz checks, the feed endpoint) take a cheap
//! [`SnapshotHandle::load`] and never block a writer.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bucketgate_core::credential::Credential;
use bucketgate_core::gateway::CredentialSource;

/// Every usable-or-not credential the data plane knows, by access key id,
/// and a version that changes whenever the content does.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: u64,
    pub credentials: HashMap<String, Credential>,
}

impl CredentialSource for Snapshot {
    type Ref<'a> = &'a Credential;
    fn credential<'a>(&'a self, access_key_id: &str) -> Option<&'a Credential> {
        self.credentials.get(access_key_id)
    }
}

/// Shared, lock-free handle to the current snapshot.
#[derive(Clone, Debug, Default)]
pub struct SnapshotHandle(Arc<ArcSwap<Snapshot>>);

impl SnapshotHandle {
    pub fn new(snapshot: Snapshot) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(snapshot)))
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    pub fn store(&self, snapshot: Snapshot) {
        self.0.store(Arc::new(snapshot));
    }
}
