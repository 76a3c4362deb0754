//! Date-scoped derived signing keys (SigV4 kSigning), the form in which
//! credentials leave the broker: a key is good for one credential scope
//! (`<date>/<region>/s3/aws4_request`), so a leaked feed snapshot is worth
//! the days it covers, not the secret's lifetime
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html#derive-signing-key>).
//!
//! The broker derives, per tenant credential, the days a presigned URL can
//! still be valid ([`crate::sigv4::MAX_PRESIGN_EXPIRES`]: seven) plus today
//! and tomorrow; per admin credential yesterday, today and tomorrow (the
//! re-signer signs with the current date; yesterday covers clock skew
//! around midnight). The data plane looks a key up by the scope the tenant
//! signed with (or, for the admin, the scope it signs with now).

use std::collections::BTreeMap;

use crate::crypto::SigningKey;
use crate::date::{AmzDate, UnixSeconds};
use crate::secret::SecretKey;

/// Days back a tenant's keys cover: a presigned URL lives at most 7 days.
pub const TENANT_DAYS_BACK: i64 = 7;
/// Days back an admin's keys cover.
pub const ADMIN_DAYS_BACK: i64 = 1;
/// Days ahead both cover (the next poll may come after midnight).
pub const DAYS_AHEAD: i64 = 1;

const SERVICE: &str = "s3";

/// Signing keys by credential scope. Cloning shares nothing mutable; every
/// key is zeroized on drop; `Debug` prints the scopes only.
#[derive(Clone, Default)]
pub struct DerivedKeys {
    keys: BTreeMap<String, SigningKey>,
}

impl DerivedKeys {
    /// Derives `secret`'s keys for every (date, region) pair.
    pub fn derive<D: AsRef<str>, R: AsRef<str>>(
        secret: &SecretKey,
        dates: &[D],
        regions: &[R],
    ) -> Self {
        let mut keys = BTreeMap::new();
        for d in dates {
            for r in regions {
                let (d, r) = (d.as_ref(), r.as_ref());
                keys.insert(scope(d, r), SigningKey::derive(secret, d, r, SERVICE));
            }
        }
        Self { keys }
    }

    pub fn insert(&mut self, scope: String, key: SigningKey) {
        self.keys.insert(scope, key);
    }

    /// The key for a credential scope.
    pub fn get(&self, scope: &str) -> Option<&SigningKey> {
        self.keys.get(scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &SigningKey)> {
        self.keys.iter().map(|(s, k)| (s.as_str(), k))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl PartialEq for DerivedKeys {
    fn eq(&self, other: &Self) -> bool {
        self.keys.len() == other.keys.len()
            && self
                .iter()
                .zip(other.iter())
                .all(|((a, ka), (b, kb))| a == b && ka.expose() == kb.expose())
    }
}

impl Eq for DerivedKeys {}

impl std::fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

/// What a signature is checked or made with: the secret (keys derived and
/// cached as needed) or a set of date-scoped derived keys.
#[derive(Clone, Copy, Debug)]
pub enum KeyRef<'k> {
    Secret(&'k SecretKey),
    Derived(&'k DerivedKeys),
}

impl<'k> From<&'k SecretKey> for KeyRef<'k> {
    fn from(s: &'k SecretKey) -> Self {
        KeyRef::Secret(s)
    }
}

impl<'k> From<&'k DerivedKeys> for KeyRef<'k> {
    fn from(d: &'k DerivedKeys) -> Self {
        KeyRef::Derived(d)
    }
}

impl KeyRef<'_> {
    /// The signing key for `scope` (`date/region/service/aws4_request`):
    /// from `cache` or derived from the secret, or looked up among the
    /// derived keys (`None` when the set does not cover the scope).
    pub fn signing_key(
        self,
        cache: &dyn crate::sigv4::SigningKeyCache,
        access_key_id: &str,
        scope: &str,
    ) -> Option<SigningKey> {
        match self {
            KeyRef::Secret(s) => Some(crate::sigv4::cached_signing_key(
                cache,
                access_key_id,
                s,
                scope,
            )),
            KeyRef::Derived(d) => d.get(scope).cloned(),
        }
    }

    /// Whether there is nothing to sign with.
    pub fn is_empty(self) -> bool {
        match self {
            KeyRef::Secret(s) => s.is_empty(),
            KeyRef::Derived(d) => d.is_empty(),
        }
    }
}

/// `<date>/<region>/s3/aws4_request`.
pub fn scope(date: &str, region: &str) -> String {
    format!("{date}/{region}/{SERVICE}/aws4_request")
}

/// The `YYYYMMDD` dates from `back` days before `now` to `ahead` days after.
pub fn dates_around(now: UnixSeconds, back: i64, ahead: i64) -> Vec<String> {
    (-back..=ahead)
        .filter_map(|d| AmzDate::from_unix(now + d * 86_400))
        .map(|a| a.date().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_and_look_up() {
        let secret = SecretKey::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        // 2013-05-24, the AWS documentation's examples.
        let dates = dates_around(1_369_353_600, TENANT_DAYS_BACK, DAYS_AHEAD);
        assert_eq!(dates.len(), 9);
        assert_eq!(
            (dates[0].as_str(), dates[7].as_str(), dates[8].as_str()),
            ("20130517", "20130524", "20130525")
        );
        let keys = DerivedKeys::derive(&secret, &dates, &["us-east-1", "eu-west-1"]);
        assert_eq!(keys.len(), 18);
        let k = keys.get("20130524/us-east-1/s3/aws4_request").unwrap();
        assert_eq!(
            k.expose(),
            SigningKey::derive(&secret, "20130524", "us-east-1", "s3").expose()
        );
        assert!(keys.get("20130526/us-east-1/s3/aws4_request").is_none());
        assert!(!format!("{keys:?}").contains(&hex::encode(k.expose())));
        assert_eq!(keys.clone(), keys);
    }
}
