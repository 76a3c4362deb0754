//! The merged credential snapshot. Writers (the SQLite poller, the
//! Kubernetes reflectors) build a new [`Snapshot`] and [`SnapshotHandle::store`]
//! it; readers (ext_authz checks, the feed endpoint) take a cheap
//! [`SnapshotHandle::load`] and never block a writer.
//!
//! A snapshot holds the credentials and the anonymous (ReadOnly) bindings;
//! both enter its version. Bindings are few and travel whole on the first
//! page of every feed answer, so the delta history tracks access keys only.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bucketgate_core::credential::{AnonymousBinding, AnonymousBindings, Credential};
use bucketgate_core::gateway::CredentialSource;
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;

/// Every usable-or-not credential the data plane knows, by access key id,
/// the anonymous bindings by bucket, and a version that changes whenever
/// either does. It also keeps the
/// access keys in order with a digest of each, and which keys changed
/// between recent versions, so the feed can page through it and answer a
/// filter with only what changed since the version it holds.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: u64,
    pub credentials: HashMap<String, Credential>,
    /// Anonymous (ReadOnly) bindings by bucket.
    pub anonymous: AnonymousBindings,
    /// Access keys, sorted, with the digest of each credential.
    index: Vec<(String, u64)>,
    /// Recent changes, oldest first: from `version`, the keys that changed.
    history: VecDeque<Change>,
}

#[derive(Clone, Debug)]
struct Change {
    from: u64,
    keys: Arc<Vec<String>>,
}

/// How many versions back a delta can reach.
const HISTORY_VERSIONS: usize = 256;
/// How many changed keys the history may hold in all (beyond, the oldest
/// changes are forgotten and a filter that far behind gets everything).
const HISTORY_KEYS: usize = 1_000_000;

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

impl Snapshot {
    /// A snapshot of `credentials` (no anonymous binding) whose version is
    /// a digest of the content.
    pub fn from_credentials(credentials: HashMap<String, Credential>) -> Self {
        Self::new(credentials, AnonymousBindings::new())
    }

    /// A snapshot of `credentials` and `anonymous` whose version is a digest
    /// of both.
    pub fn new(credentials: HashMap<String, Credential>, anonymous: AnonymousBindings) -> Self {
        let mut index: Vec<(String, u64)> = credentials
            .iter()
            .map(|(k, c)| (k.clone(), credential_digest(c)))
            .collect();
        index.sort_unstable();
        let mut h = Sha256::new();
        for (k, d) in &index {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k.as_bytes());
            h.update(d.to_be_bytes());
        }
        // Without bindings the digest is the credentials' alone, as before
        // bindings existed; with them, a tag no key record can produce (a
        // length prefix of 2^64 - 1) and then each binding in bucket order.
        if !anonymous.is_empty() {
            h.update(u64::MAX.to_be_bytes());
            for b in sorted_bindings(&anonymous) {
                for part in [&b.bucket, &b.backend] {
                    h.update((part.len() as u64).to_be_bytes());
                    h.update(part.as_bytes());
                }
                h.update(b.per_source_ip_rps.to_be_bytes());
            }
        }
        let d = h.finalize();
        let mut v = [0u8; 8];
        v.copy_from_slice(&d[..8]);
        Self {
            version: u64::from_be_bytes(v),
            credentials,
            anonymous,
            index,
            history: VecDeque::new(),
        }
    }

    /// Every anonymous binding, sorted by bucket (what the feed carries).
    pub fn anonymous_sorted(&self) -> Vec<AnonymousBinding> {
        sorted_bindings(&self.anonymous).cloned().collect()
    }

    /// This snapshot as the successor of `previous`: its history is the
    /// previous one's plus the keys that differ between the two.
    pub fn following(mut self, previous: &Snapshot) -> Self {
        let changed = changed_keys(&previous.index, &self.index);
        let mut history = previous.history.clone();
        history.push_back(Change {
            from: previous.version,
            keys: Arc::new(changed),
        });
        let mut total: usize = history.iter().map(|c| c.keys.len()).sum();
        while history.len() > HISTORY_VERSIONS || (total > HISTORY_KEYS && history.len() > 1) {
            if let Some(old) = history.pop_front() {
                total -= old.keys.len();
            }
        }
        self.history = history;
        self
    }

    /// The access keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.index.iter().map(|(k, _)| k.as_str())
    }

    /// The access keys that changed (added, modified or removed) since
    /// `version`, in order; `None` when that version is not in the
    /// history (too old, or from another broker process).
    pub fn changed_since(&self, version: u64) -> Option<Vec<&str>> {
        if version == self.version {
            return Some(Vec::new());
        }
        let from = self.history.iter().rposition(|c| c.from == version)?;
        let keys: BTreeSet<&str> = self
            .history
            .iter()
            .skip(from)
            .flat_map(|c| c.keys.iter().map(String::as_str))
            .collect();
        Some(keys.into_iter().collect())
    }
}

fn sorted_bindings(anonymous: &AnonymousBindings) -> impl Iterator<Item = &AnonymousBinding> {
    let mut all: Vec<&AnonymousBinding> = anonymous.values().collect();
    all.sort_unstable_by(|a, b| a.bucket.cmp(&b.bucket));
    all.into_iter()
}

/// Keys present in one sorted index and not the other, or with another
/// digest.
fn changed_keys(old: &[(String, u64)], new: &[(String, u64)]) -> Vec<String> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                if a.1 != b.1 {
                    out.push(a.0.clone());
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.0 < b.0 => {
                out.push(a.0.clone());
                i += 1;
            }
            (Some(a), None) => {
                out.push(a.0.clone());
                i += 1;
            }
            (_, Some(b)) => {
                out.push(b.0.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// A 64-bit digest of every field of one credential. The secret enters
/// through its own one-way fingerprint. Equal content gives the same
/// digest in every process, so the feed's ETag survives restarts.
fn credential_digest(c: &Credential) -> u64 {
    let mut h = Sha256::new();
    h.update((c.access_key_id.len() as u64).to_be_bytes());
    h.update(c.access_key_id.as_bytes());
    h.update(c.secret.fingerprint().to_be_bytes());
    h.update((c.scopes.len() as u64).to_be_bytes());
    for s in &c.scopes {
        for part in [&s.backend, &s.bucket] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
    }
    h.update([u8::from(c.disabled)]);
    let opt = |v: Option<i128>| match v {
        None => [0u8; 17],
        Some(x) => {
            let mut b = [1u8; 17];
            b[1..].copy_from_slice(&x.to_be_bytes());
            b
        }
    };
    h.update(opt(c.expires_at.map(i128::from)));
    h.update(opt(c.rps.map(i128::from)));
    h.update(opt(c.quota_soft_bytes.map(i128::from)));
    h.update(opt(c.quota_hard_bytes.map(i128::from)));
    let d = h.finalize();
    let mut v = [0u8; 8];
    v.copy_from_slice(&d[..8]);
    u64::from_be_bytes(v)
}

/// Where a credential came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Sqlite,
    Kubernetes,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Kubernetes => "kubernetes",
        }
    }
}

/// Why the broker is not ready yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady(&'static str),
}

#[derive(Debug, Default)]
struct Sources {
    sqlite: Option<HashMap<String, Credential>>,
    /// The SQLite store's anonymous bindings (loaded with its credentials).
    sqlite_anonymous: Vec<AnonymousBinding>,
    /// `None` until the first complete list; then by Secret name.
    kube: Option<Vec<(String, Credential)>>,
    /// Anonymous-binding Secrets: `None` until their first complete list;
    /// then by Secret name.
    kube_anonymous: Option<Vec<(String, AnonymousBinding)>>,
    kube_enabled: bool,
    /// Access keys and buckets whose collision was already logged.
    warned: HashSet<String>,
}

/// Merges the sources into the [`SnapshotHandle`]: Kubernetes Secrets and
/// the SQLite store, Kubernetes winning on an access-key collision and on
/// two anonymous bindings of one bucket (logged once per key or bucket).
/// The snapshot is replaced only when its content changes.
#[derive(Clone, Debug)]
pub struct Broker {
    handle: SnapshotHandle,
    sources: Arc<Mutex<Sources>>,
    metrics: Metrics,
}

impl Broker {
    /// `kube_enabled`: readiness then also waits for the first Kubernetes sync.
    pub fn new(handle: SnapshotHandle, metrics: Metrics, kube_enabled: bool) -> Self {
        Self {
            handle,
            sources: Arc::new(Mutex::new(Sources {
                kube_enabled,
                ..Sources::default()
            })),
            metrics,
        }
    }

    pub fn handle(&self) -> &SnapshotHandle {
        &self.handle
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sources> {
        // A panic while merging leaves plain data behind; keep serving it.
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The SQLite store's credentials; its anonymous bindings stay as last
    /// set (see [`Self::set_sqlite_all`]).
    pub fn set_sqlite(&self, credentials: Vec<Credential>) {
        let mut s = self.lock();
        s.sqlite = Some(
            credentials
                .into_iter()
                .map(|c| (c.access_key_id.clone(), c))
                .collect(),
        );
        self.rebuild(&mut s);
    }

    /// The complete SQLite content, credentials and anonymous bindings, in
    /// one new snapshot (after each successful load).
    pub fn set_sqlite_all(&self, credentials: Vec<Credential>, anonymous: Vec<AnonymousBinding>) {
        let mut s = self.lock();
        s.sqlite = Some(
            credentials
                .into_iter()
                .map(|c| (c.access_key_id.clone(), c))
                .collect(),
        );
        s.sqlite_anonymous = anonymous;
        self.rebuild(&mut s);
    }

    /// The complete Kubernetes content, `(Secret name, credential)`, after
    /// the first sync and after every event.
    pub fn set_kubernetes(&self, credentials: Vec<(String, Credential)>) {
        let mut s = self.lock();
        s.kube = Some(credentials);
        self.rebuild(&mut s);
    }

    /// The complete set of anonymous-binding Secrets, `(Secret name,
    /// binding)`, after their first sync (possibly empty) and after every
    /// event.
    pub fn set_kubernetes_anonymous(&self, bindings: Vec<(String, AnonymousBinding)>) {
        let mut s = self.lock();
        s.kube_anonymous = Some(bindings);
        self.rebuild(&mut s);
    }

    pub fn readiness(&self) -> Readiness {
        let s = self.lock();
        if s.sqlite.is_none() {
            Readiness::NotReady("the SQLite store has not loaded yet")
        } else if s.kube_enabled && s.kube.is_none() {
            Readiness::NotReady("the Kubernetes Secrets have not synced yet")
        } else if s.kube_enabled && s.kube_anonymous.is_none() {
            Readiness::NotReady("the Kubernetes anonymous-binding Secrets have not synced yet")
        } else {
            Readiness::Ready
        }
    }

    /// SQLite's bindings overlaid with Kubernetes' (the first Secret by
    /// name wins among Secrets naming one bucket).
    fn merge_anonymous(s: &mut Sources) -> (AnonymousBindings, usize) {
        let mut merged: AnonymousBindings = s
            .sqlite_anonymous
            .iter()
            .map(|b| (b.bucket.clone(), b.clone()))
            .collect();
        let mut kube_buckets: HashMap<&str, &str> = HashMap::new();
        let mut kube_sorted: Vec<&(String, AnonymousBinding)> = s
            .kube_anonymous
            .as_ref()
            .map(|k| k.iter().collect())
            .unwrap_or_default();
        kube_sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, b) in kube_sorted {
            let bucket = b.bucket.as_str();
            if let Some(first) = kube_buckets.get(bucket) {
                if s.warned.insert(format!("kube-anon:{bucket}")) {
                    tracing::warn!(
                        bucket, kept = %first, ignored = %name,
                        "two anonymous-binding Secrets name the same bucket; keeping the first by name"
                    );
                }
                continue;
            }
            kube_buckets.insert(bucket, name);
            if merged.insert(bucket.to_owned(), b.clone()).is_some()
                && s.warned.insert(format!("anon:{bucket}"))
            {
                tracing::warn!(
                    bucket, secret = %name,
                    "bucket has an anonymous binding in Kubernetes and in SQLite; the Kubernetes Secret wins"
                );
            }
        }
        let kube_len = kube_buckets.len();
        (merged, kube_len)
    }

    fn rebuild(&self, s: &mut Sources) {
        let mut merged: HashMap<String, Credential> = s.sqlite.clone().unwrap_or_default();
        let sqlite_len = merged.len();
        let mut kube_keys: HashMap<String, String> = HashMap::new();
        let mut kube_sorted: Vec<&(String, Credential)> = s
            .kube
            .as_ref()
            .map(|k| k.iter().collect())
            .unwrap_or_default();
        kube_sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, c) in kube_sorted {
            let id = &c.access_key_id;
            if let Some(first) = kube_keys.get(id) {
                // Two Secrets claim one key: keep the first by name, deterministically.
                if s.warned.insert(format!("kube:{id}")) {
                    tracing::warn!(
                        access_key_id = %id, kept = %first, ignored = %name,
                        "two internal Secrets carry the same access key; keeping the first by name"
                    );
                }
                continue;
            }
            kube_keys.insert(id.clone(), name.clone());
            if merged.insert(id.clone(), c.clone()).is_some() && s.warned.insert(id.clone()) {
                tracing::warn!(
                    access_key_id = %id, secret = %name,
                    "access key exists in Kubernetes and in SQLite; the Kubernetes Secret wins"
                );
            }
        }
        self.metrics
            .cache_credentials
            .with_label_values(&[Source::Sqlite.as_str()])
            .set(sqlite_len as i64);
        self.metrics
            .cache_credentials
            .with_label_values(&[Source::Kubernetes.as_str()])
            .set(kube_keys.len() as i64);
        self.metrics
            .cache_credentials
            .with_label_values(&["merged"])
            .set(merged.len() as i64);
        let (anonymous, kube_anonymous) = Self::merge_anonymous(s);
        let anon = &self.metrics.cache_anonymous_bindings;
        anon.with_label_values(&[Source::Sqlite.as_str()])
            .set(s.sqlite_anonymous.len() as i64);
        anon.with_label_values(&[Source::Kubernetes.as_str()])
            .set(kube_anonymous as i64);
        anon.with_label_values(&["merged"])
            .set(anonymous.len() as i64);
        let previous = self.handle.load();
        let next = Snapshot::new(merged, anonymous);
        if next.version != previous.version {
            let next = next.following(&previous);
            tracing::info!(
                version = format_args!("{:016x}", next.version),
                credentials = next.credentials.len(),
                anonymous_bindings = next.anonymous.len(),
                "credential snapshot updated"
            );
            self.handle.store(next);
        }
    }

    /// Records the outcome of one load or sync of `source`.
    pub fn record_sync(&self, source: Source, ok: bool, now: i64) {
        let label = [source.as_str()];
        self.metrics
            .store_synced
            .with_label_values(&label)
            .set(i64::from(ok));
        if ok {
            self.metrics
                .store_last_sync
                .with_label_values(&label)
                .set(now);
        } else {
            self.metrics
                .store_sync_errors
                .with_label_values(&label)
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucketgate_core::credential::Scope;

    fn cred(id: &str, secret: &str, bucket: &str) -> Credential {
        Credential::new(id, secret, vec![Scope::new("main", bucket)])
    }

    fn content_version(credentials: &HashMap<String, Credential>) -> u64 {
        Snapshot::from_credentials(credentials.clone()).version
    }

    #[test]
    fn version_follows_content() {
        let mut a = HashMap::new();
        a.insert("K1".to_owned(), cred("K1", "s", "alpha"));
        a.insert("K2".to_owned(), cred("K2", "t", "beta"));
        let v = content_version(&a);
        assert_eq!(v, content_version(&a.clone()));
        let mut b = a.clone();
        b.get_mut("K1").unwrap().secret = "other".into();
        assert_ne!(v, content_version(&b));
        let mut b = a.clone();
        b.get_mut("K2").unwrap().expires_at = Some(5);
        assert_ne!(v, content_version(&b));
        let mut b = a.clone();
        b.get_mut("K2").unwrap().disabled = true;
        assert_ne!(v, content_version(&b));
        let mut b = a.clone();
        b.get_mut("K2").unwrap().quota_hard_bytes = Some(0);
        assert_ne!(v, content_version(&b));
        let mut b = a.clone();
        b.remove("K2");
        assert_ne!(v, content_version(&b));
        assert_ne!(content_version(&HashMap::new()), v);
    }

    #[test]
    fn history_names_what_changed_since_a_version() {
        let h = SnapshotHandle::default();
        let broker = Broker::new(h.clone(), Metrics::new(), false);
        broker.set_sqlite(vec![cred("K1", "a", "x"), cred("K2", "b", "x")]);
        let v1 = h.load().version;
        broker.set_sqlite(vec![
            cred("K1", "a", "x"),
            cred("K2", "b2", "x"),
            cred("K3", "c", "x"),
        ]);
        let v2 = h.load().version;
        broker.set_sqlite(vec![cred("K2", "b2", "x"), cred("K3", "c", "x")]);
        let snap = h.load();
        assert_eq!(snap.changed_since(v2), Some(vec!["K1"]));
        assert_eq!(snap.changed_since(v1), Some(vec!["K1", "K2", "K3"]));
        assert_eq!(snap.changed_since(snap.version), Some(vec![]));
        assert_eq!(snap.changed_since(12345), None);
        assert_eq!(snap.keys().collect::<Vec<_>>(), vec!["K2", "K3"]);
        // Back to v1's content: the version recurs and its delta is empty
        // from the last time it was current.
        broker.set_sqlite(vec![cred("K1", "a", "x"), cred("K2", "b", "x")]);
        let snap = h.load();
        assert_eq!(snap.version, v1);
        assert_eq!(snap.changed_since(v1), Some(vec![]));
        assert_eq!(snap.changed_since(v2), Some(vec!["K1", "K2", "K3"]));
    }

    #[test]
    fn history_is_bounded() {
        let mut snap = Snapshot::from_credentials(HashMap::new());
        let first = snap.version;
        for i in 0..(HISTORY_VERSIONS + 5) {
            let mut m = HashMap::new();
            m.insert("K".to_owned(), cred("K", &i.to_string(), "x"));
            snap = Snapshot::from_credentials(m).following(&snap);
        }
        assert_eq!(snap.history.len(), HISTORY_VERSIONS);
        assert_eq!(snap.changed_since(first), None);
    }

    #[test]
    fn kubernetes_wins_and_readiness_waits_for_both() {
        let h = SnapshotHandle::default();
        let broker = Broker::new(h.clone(), Metrics::new(), true);
        assert!(matches!(broker.readiness(), Readiness::NotReady(_)));
        broker.set_sqlite(vec![
            cred("K1", "from-sqlite", "alpha"),
            cred("K2", "s2", "beta"),
        ]);
        assert!(matches!(broker.readiness(), Readiness::NotReady(m) if m.contains("Kubernetes")));
        let v1 = h.load().version;
        assert_eq!(h.load().credentials.len(), 2);

        broker.set_kubernetes(vec![("vc-k1".into(), cred("K1", "from-kube", "gamma"))]);
        assert!(
            matches!(broker.readiness(), Readiness::NotReady(m) if m.contains("anonymous-binding"))
        );
        // No binding Secret at all: an empty list is a sync too.
        broker.set_kubernetes_anonymous(vec![]);
        assert_eq!(broker.readiness(), Readiness::Ready);
        let snap = h.load();
        assert_ne!(snap.version, v1);
        assert_eq!(snap.credentials["K1"].secret.expose(), "from-kube");
        assert_eq!(snap.credentials["K1"].scopes[0].bucket, "gamma");
        assert_eq!(snap.credentials["K2"].secret.expose(), "s2");

        // Same content: same snapshot object (no new version).
        let before = h.load();
        broker.set_kubernetes(vec![("vc-k1".into(), cred("K1", "from-kube", "gamma"))]);
        assert!(Arc::ptr_eq(&before, &h.load()));

        // The Secret is deleted: the SQLite entry shows through again.
        broker.set_kubernetes(vec![]);
        assert_eq!(h.load().credentials["K1"].secret.expose(), "from-sqlite");
    }

    fn binding(bucket: &str, backend: &str, rps: u32) -> AnonymousBinding {
        AnonymousBinding {
            bucket: bucket.into(),
            backend: backend.into(),
            per_source_ip_rps: rps,
        }
    }

    #[test]
    fn kubernetes_wins_on_an_anonymous_bucket_collision() {
        let h = SnapshotHandle::default();
        let metrics = Metrics::new();
        let broker = Broker::new(h.clone(), metrics.clone(), true);
        broker.set_sqlite_all(
            vec![cred("K1", "s", "alpha")],
            vec![
                binding("public", "sqlite-backend", 5),
                binding("docs", "main", 0),
            ],
        );
        broker.set_kubernetes(vec![]);
        assert_eq!(h.load().anonymous["public"].backend, "sqlite-backend");
        broker.set_kubernetes_anonymous(vec![
            ("anon-b".into(), binding("public", "second", 2)),
            ("anon-a".into(), binding("public", "kube-backend", 9)),
            ("anon-c".into(), binding("assets", "main", 0)),
        ]);
        assert_eq!(broker.readiness(), Readiness::Ready);
        let snap = h.load();
        assert_eq!(
            snap.anonymous_sorted(),
            vec![
                binding("assets", "main", 0),
                binding("docs", "main", 0),
                // Kubernetes over SQLite; among Secrets, the first by name.
                binding("public", "kube-backend", 9),
            ]
        );
        assert_eq!(snap.credentials.len(), 1);
        let text = metrics.render();
        for line in [
            "bucketgate_cache_anonymous_bindings{source=\"sqlite\"} 2",
            "bucketgate_cache_anonymous_bindings{source=\"kubernetes\"} 2",
            "bucketgate_cache_anonymous_bindings{source=\"merged\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        // The Secrets are deleted: SQLite's binding shows through again.
        broker.set_kubernetes_anonymous(vec![]);
        assert_eq!(
            h.load().anonymous["public"],
            binding("public", "sqlite-backend", 5)
        );
        assert!(!h.load().anonymous.contains_key("assets"));
    }

    #[test]
    fn a_binding_change_alone_changes_the_version() {
        let h = SnapshotHandle::default();
        let broker = Broker::new(h.clone(), Metrics::new(), false);
        let creds = || vec![cred("K1", "a", "x"), cred("K2", "b", "x")];
        broker.set_sqlite_all(creds(), vec![]);
        let v0 = h.load().version;
        // Without bindings, the version is the credentials' alone.
        let mut m = HashMap::new();
        for c in creds() {
            m.insert(c.access_key_id.clone(), c);
        }
        assert_eq!(v0, content_version(&m));

        broker.set_sqlite_all(creds(), vec![binding("public", "main", 0)]);
        let v1 = h.load().version;
        assert_ne!(v1, v0);
        broker.set_sqlite_all(creds(), vec![binding("public", "main", 3)]);
        let v2 = h.load().version;
        assert_ne!(v2, v1, "the rate is content");
        broker.set_sqlite_all(creds(), vec![binding("public", "other", 3)]);
        let v3 = h.load().version;
        assert_ne!(v3, v2, "so is the backend");
        // `set_sqlite` leaves the bindings as they are.
        broker.set_sqlite(creds());
        assert_eq!(h.load().version, v3);
        // No key changed: a delta from any of those versions names no key
        // (the bindings travel whole on the first page).
        let snap = h.load();
        for v in [v0, v1, v2] {
            assert_eq!(snap.changed_since(v), Some(vec![]));
        }
        // Back to no bindings: the first version again.
        broker.set_sqlite_all(creds(), vec![]);
        assert_eq!(h.load().version, v0);
        assert!(h.load().anonymous.is_empty());
    }

    #[test]
    fn duplicate_secrets_keep_the_first_by_name() {
        let h = SnapshotHandle::default();
        let broker = Broker::new(h.clone(), Metrics::new(), false);
        broker.set_sqlite(vec![]);
        broker.set_kubernetes(vec![
            ("vc-b".into(), cred("K", "second", "x")),
            ("vc-a".into(), cred("K", "first", "x")),
        ]);
        assert_eq!(h.load().credentials["K"].secret.expose(), "first");
    }
}
