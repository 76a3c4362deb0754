//! A tenant's virtual credential as the data plane needs it: key, secret,
//! (backend, bucket) scopes, state and limits. The Secret contract
//! (`contract.rs`) and the SQLite store both produce this type.

use serde::{Deserialize, Serialize};

use crate::date::UnixSeconds;
use crate::derived::{DerivedKeys, KeyRef};
use crate::error::DenyReason;
use crate::secret::SecretKey;
use crate::sigv2::V2Key;

/// One (backend, bucket) pair a credential may use. Serialised as
/// `{"bucket": …, "backend": …}`, the `bucket_scopes` wire form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Scope {
    pub bucket: String,
    pub backend: String,
}

impl Scope {
    pub fn new(backend: impl Into<String>, bucket: impl Into<String>) -> Self {
        Self {
            backend: backend.into(),
            bucket: bucket.into(),
        }
    }
}

/// An anonymous (ReadOnly) binding as the data plane needs it: unsigned
/// reads of `scope.bucket` are forwarded to `scope.backend`, each source
/// address limited to `per_source_ip_rps` (0: the proxy default,
/// `s3_proxy.anonymous_per_source_ip_rps`). From the contract's
/// anonymous-binding Secret or the SQLite store; Serialised as
/// `{"bucket": …, "backend": …, "per_source_ip_rps": n}` (feed, plugin config).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnonymousBinding {
    pub bucket: String,
    pub backend: String,
    #[serde(default)]
    pub per_source_ip_rps: u32,
}

impl AnonymousBinding {
    pub fn scope(&self) -> Scope {
        Scope::new(self.backend.clone(), self.bucket.clone())
    }
}

/// Anonymous bindings by bucket name (a bucket has at most one).
pub type AnonymousBindings = std::collections::HashMap<String, AnonymousBinding>;

/// A virtual credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub access_key_id: String,
    pub secret: SecretKey,
    pub scopes: Vec<Scope>,
    pub disabled: bool,
    /// After this instant the key answers 401 (rotation overlap, expiry).
    pub expires_at: Option<UnixSeconds>,
    /// Per-key requests-per-second override (`None`: the proxy default).
    pub rps: Option<u32>,
    pub quota_soft_bytes: Option<u64>,
    pub quota_hard_bytes: Option<u64>,
    /// In the data plane, from the broker's feed: date-scoped derived keys
    /// instead of the secret (which is then empty). See [`crate::derived`].
    pub signing_keys: Option<DerivedKeys>,
    /// From the broker's feed, when it may send them: the SigV2 key
    /// ([`crate::sigv2::V2Key`]); with the secret at hand it is derived.
    pub sigv2_key: Option<V2Key>,
}

impl Credential {
    /// What SigV2 signatures are checked with, if this credential can
    /// check them (a feed credential without its SigV2 key cannot).
    pub fn sigv2_key(&self) -> Option<std::borrow::Cow<'_, V2Key>> {
        match (&self.sigv2_key, &self.signing_keys) {
            (Some(k), _) => Some(std::borrow::Cow::Borrowed(k)),
            (None, None) if !self.secret.is_empty() => {
                Some(std::borrow::Cow::Owned(V2Key::from_secret(&self.secret)))
            }
            _ => None,
        }
    }

    /// What the tenant's signatures are checked with.
    pub fn key(&self) -> KeyRef<'_> {
        match &self.signing_keys {
            Some(d) => KeyRef::Derived(d),
            None => KeyRef::Secret(&self.secret),
        }
    }

    pub fn new(
        access_key_id: impl Into<String>,
        secret: impl Into<SecretKey>,
        scopes: Vec<Scope>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret: secret.into(),
            scopes,
            disabled: false,
            expires_at: None,
            rps: None,
            quota_soft_bytes: None,
            quota_hard_bytes: None,
            signing_keys: None,
            sigv2_key: None,
        }
    }

    /// Disabled or expired credentials are refused (401) before anything else.
    pub fn check_usable(&self, now: UnixSeconds) -> Result<(), DenyReason> {
        if self.disabled {
            return Err(DenyReason::CredentialDisabled);
        }
        match self.expires_at {
            Some(t) if now >= t => Err(DenyReason::CredentialExpired),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_states() {
        let mut c = Credential::new("AKIA", "s", vec![Scope::new("b", "x")]);
        assert!(c.check_usable(10).is_ok());
        c.expires_at = Some(10);
        assert_eq!(c.check_usable(9), Ok(()));
        assert_eq!(c.check_usable(10), Err(DenyReason::CredentialExpired));
        c.disabled = true;
        assert_eq!(c.check_usable(0), Err(DenyReason::CredentialDisabled));
        let json = serde_json::to_string(&c.scopes).unwrap();
        assert_eq!(json, r#"[{"bucket":"x","backend":"b"}]"#);
    }
}
