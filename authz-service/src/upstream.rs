//! Upstream admin credentials per backend: static (config, environment,
//! files) or the AWS SDK default chain (environment, profile, web identity /
//! IRSA, container credentials / EKS Pod Identity, IMDS), refreshed in the
//! background. Both data planes read them through [`AdminCredentialsHandle`]:
//! ext_authz re-signs with them, the feed hands them to the WASM filter.
//! Session tokens travel with them and are forwarded as
//! `x-amz-security-token` by `core::resign`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use bucketgate_core::feed::{Coverage, FeedBackend};
use bucketgate_core::resign::AdminCredentials;
use sha2::{Digest, Sha256};

use crate::config::{AdminSource, BackendConfig};

/// Current admin credentials by backend name; cheap to clone and read.
#[derive(Clone, Debug, Default)]
pub struct AdminCredentialsHandle(Arc<ArcSwap<HashMap<String, AdminCredentials>>>);

impl AdminCredentialsHandle {
    /// The backend's credentials now (`None`: unknown backend, or its
    /// source has not produced credentials yet — deny).
    pub fn current(&self, backend: &str) -> Option<AdminCredentials> {
        self.0.load().get(backend).cloned()
    }

    /// Every backend's credentials.
    pub fn all(&self) -> Arc<HashMap<String, AdminCredentials>> {
        self.0.load_full()
    }

    pub fn set(&self, backend: &str, creds: AdminCredentials) {
        self.0.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(backend.to_owned(), creds.clone());
            m
        });
    }

    /// The feed's `backends`, sorted by name.
    /// Every backend's admin credentials as the feed carries them: derived
    /// signing keys for the dates and regions of `cover`, never the secret.
    pub fn feed_backends(&self, cover: &Coverage) -> Vec<FeedBackend> {
        let all = self.all();
        let mut out: Vec<FeedBackend> = all
            .iter()
            .map(|(name, c)| FeedBackend::derived(name, c, cover))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// A digest of every backend's credentials (secrets by fingerprint).
    pub fn version(&self) -> u64 {
        let all = self.all();
        let mut names: Vec<&String> = all.keys().collect();
        names.sort();
        let mut h = Sha256::new();
        for n in names {
            let c = &all[n];
            for part in [n.as_str(), c.access_key_id.as_str()] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part.as_bytes());
            }
            h.update(c.secret.fingerprint().to_be_bytes());
            match &c.session_token {
                None => h.update([0u8]),
                Some(t) => {
                    h.update([1u8]);
                    h.update(Sha256::digest(t.as_bytes()));
                }
            }
        }
        let d = h.finalize();
        let mut v = [0u8; 8];
        v.copy_from_slice(&d[..8]);
        u64::from_be_bytes(v)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("backend '{backend}': {message}")]
    Source { backend: String, message: String },
}

/// One backend's source, resolved.
#[derive(Debug)]
enum Provider {
    Fixed(AdminCredentials),
    Files {
        akid: std::path::PathBuf,
        secret: std::path::PathBuf,
        token: Option<std::path::PathBuf>,
    },
    Chain(SharedCredentialsProvider),
}

fn read_trimmed(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl Provider {
    /// The credentials now and when they expire.
    async fn fetch(&self) -> Result<(AdminCredentials, Option<SystemTime>), String> {
        match self {
            Self::Fixed(c) => Ok((c.clone(), None)),
            Self::Files {
                akid,
                secret,
                token,
            } => {
                let c = AdminCredentials {
                    signing_keys: None,
                    access_key_id: read_trimmed(akid)?,
                    secret: read_trimmed(secret)?.into(),
                    session_token: token
                        .as_deref()
                        .map(read_trimmed)
                        .transpose()?
                        .filter(|t| !t.is_empty()),
                };
                if c.access_key_id.is_empty() || c.secret.is_empty() {
                    return Err("a credentials file is empty".into());
                }
                Ok((c, None))
            }
            Self::Chain(p) => {
                let c = p
                    .provide_credentials()
                    .await
                    .map_err(|e| format!("AWS default chain: {}", error_chain(&e)))?;
                Ok((
                    AdminCredentials {
                        signing_keys: None,
                        access_key_id: c.access_key_id().to_owned(),
                        secret: c.secret_access_key().into(),
                        session_token: c.session_token().map(str::to_owned),
                    },
                    c.expiry(),
                ))
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

async fn provider(
    b: &BackendConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Provider, UpstreamError> {
    let err = |message: String| UpstreamError::Source {
        backend: b.name.clone(),
        message,
    };
    Ok(match &b.credentials {
        AdminSource::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } => Provider::Fixed(AdminCredentials {
            signing_keys: None,
            access_key_id: access_key_id.clone(),
            secret: secret_access_key.as_str().into(),
            session_token: session_token.clone().filter(|t| !t.is_empty()),
        }),
        AdminSource::Env {
            access_key_id_var,
            secret_access_key_var,
            session_token_var,
        } => {
            let get = |v: &str| {
                env(v)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| err(format!("environment variable {v} is not set")))
            };
            Provider::Fixed(AdminCredentials {
                signing_keys: None,
                access_key_id: get(access_key_id_var)?,
                secret: get(secret_access_key_var)?.into(),
                session_token: session_token_var
                    .as_deref()
                    .and_then(env)
                    .filter(|t| !t.is_empty()),
            })
        }
        AdminSource::Files {
            access_key_id_file,
            secret_access_key_file,
            session_token_file,
        } => Provider::Files {
            akid: access_key_id_file.clone(),
            secret: secret_access_key_file.clone(),
            token: session_token_file.clone(),
        },
        AdminSource::AwsDefaultChain { profile, region } => {
            let mut builder =
                aws_config::default_provider::credentials::DefaultCredentialsChain::builder();
            if let Some(p) = profile {
                builder = builder.profile_name(p);
            }
            if let Some(r) = region {
                builder = builder.region(aws_config::Region::new(r.clone()));
            }
            Provider::Chain(SharedCredentialsProvider::new(builder.build().await))
        }
    })
}

/// When to refresh next: `every`, or 5 minutes before expiry if sooner
/// (never more often than every 5 s).
fn next_refresh(every: Duration, expiry: Option<SystemTime>, now: SystemTime) -> Duration {
    let before_expiry = expiry.map(|e| {
        e.duration_since(now)
            .unwrap_or_default()
            .saturating_sub(Duration::from_secs(300))
    });
    let d = match before_expiry {
        Some(b) if b < every => b,
        _ => every,
    };
    d.max(Duration::from_secs(5))
}

/// Resolves every backend once (static sources must work; a failing
/// refreshable source is logged and retried) and starts the refresh tasks,
/// which stop when `stop` resolves.
pub async fn start(
    backends: &[BackendConfig],
    env: &dyn Fn(&str) -> Option<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<AdminCredentialsHandle, UpstreamError> {
    let handle = AdminCredentialsHandle::default();
    for b in backends {
        let p = provider(b, env).await?;
        let first = p.fetch().await;
        let expiry = match first {
            Ok((c, exp)) => {
                tracing::info!(backend = %b.name, access_key_id = %c.access_key_id,
                    session_token = c.session_token.is_some(), "upstream admin credentials loaded");
                handle.set(&b.name, c);
                exp
            }
            Err(message) if matches!(p, Provider::Fixed(_)) => {
                return Err(UpstreamError::Source {
                    backend: b.name.clone(),
                    message,
                });
            }
            Err(message) => {
                tracing::error!(backend = %b.name, error = %message,
                    "upstream admin credentials unavailable; requests to this backend are denied until they load");
                Some(SystemTime::now())
            }
        };
        if matches!(p, Provider::Fixed(_)) {
            continue;
        }
        let every = Duration::from_secs(b.refresh_secs);
        let name = b.name.clone();
        let h = handle.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut wait = next_refresh(every, expiry, SystemTime::now());
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
                wait = match p.fetch().await {
                    Ok((c, exp)) => {
                        tracing::debug!(backend = %name, "upstream admin credentials refreshed");
                        h.set(&name, c);
                        next_refresh(every, exp, SystemTime::now())
                    }
                    Err(message) => {
                        // Keep the last credentials: they may still be valid.
                        tracing::warn!(backend = %name, error = %message,
                            "refreshing upstream admin credentials failed; retrying in 30 s");
                        Duration::from_secs(30).min(every)
                    }
                };
            }
        });
    }
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(json: &str) -> BackendConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn refresh_schedule() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let every = Duration::from_secs(300);
        assert_eq!(next_refresh(every, None, now), every);
        // Expires in an hour: the regular period comes first.
        assert_eq!(
            next_refresh(every, Some(now + Duration::from_secs(3600)), now),
            every
        );
        // Expires in 6 minutes: refresh in 1.
        assert_eq!(
            next_refresh(every, Some(now + Duration::from_secs(360)), now),
            Duration::from_secs(60)
        );
        // Already expired: soon, but not in a tight loop.
        assert_eq!(next_refresh(every, Some(now), now), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn static_env_and_file_sources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("akid"), "FILEKEY\n").unwrap();
        std::fs::write(dir.path().join("secret"), "file-secret\n").unwrap();
        std::fs::write(dir.path().join("token"), "file-token").unwrap();
        let backends = vec![
            backend(
                r#"{"name": "s", "credentials": {"source": "static", "access_key_id": "STATICKEY", "secret_access_key": "static-secret", "session_token": "tok"}}"#,
            ),
            backend(
                r#"{"name": "e", "credentials": {"source": "env", "session_token_var": "MY_TOKEN"}}"#,
            ),
            backend(&format!(
                r#"{{"name": "f", "credentials": {{"source": "files", "access_key_id_file": "{0}/akid", "secret_access_key_file": "{0}/secret", "session_token_file": "{0}/token"}}, "refresh_secs": 3600}}"#,
                dir.path().display()
            )),
        ];
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("ENVKEY".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("env-secret".to_owned()),
            _ => None,
        };
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let h = start(&backends, &env, rx).await.unwrap();
        let s = h.current("s").unwrap();
        assert_eq!(s.access_key_id, "STATICKEY");
        assert_eq!(s.secret.expose(), "static-secret");
        assert_eq!(s.session_token.as_deref(), Some("tok"));
        let e = h.current("e").unwrap();
        assert_eq!(
            (e.access_key_id.as_str(), e.secret.expose()),
            ("ENVKEY", "env-secret")
        );
        assert_eq!(e.session_token, None);
        let f = h.current("f").unwrap();
        assert_eq!(
            (f.access_key_id.as_str(), f.secret.expose()),
            ("FILEKEY", "file-secret")
        );
        assert_eq!(f.session_token.as_deref(), Some("file-token"));
        assert!(h.current("nope").is_none());

        let feed = h.feed_backends(&Coverage::at(1_700_000_000, vec!["us-east-1".into()]));
        assert_eq!(
            feed.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
            ["e", "f", "s"]
        );
        let v = h.version();
        h.set(
            "s",
            AdminCredentials {
                signing_keys: None,
                access_key_id: "STATICKEY".into(),
                secret: "rotated".into(),
                session_token: Some("tok".into()),
            },
        );
        assert_ne!(h.version(), v);
    }

    #[tokio::test]
    async fn a_missing_static_source_is_an_error() {
        let backends = vec![backend(
            r#"{"name": "e", "credentials": {"source": "env"}}"#,
        )];
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let err = start(&backends, &|_| None, rx).await.unwrap_err();
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
    }
}
