//! SigV4 verification of header-signed and presigned S3 requests
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html>).
//!
//! Flow: [`parse_auth`] (no secret needed: the caller looks up the access key
//! it names) → [`Verifier::verify`] with that key's secret and `now` →
//! [`Verified`], which carries the tenant's date-scoped signing key and seed
//! signature for the chunk re-signer.

mod cache;
pub mod canonical;
mod parse;

pub use cache::{FixedKeyCache, NoCache, SigningKeyCache};
pub use parse::{
    ALGORITHM, Auth, AuthLocation, MAX_PRESIGN_EXPIRES, PayloadMode, param, parse_auth,
};

use crate::crypto::{Hex64, SigningKey};
use crate::date::UnixSeconds;
use crate::derived::KeyRef;
use crate::error::{DenyReason, SignatureMismatch};
use crate::http::RequestParts;
use crate::secret::SecretKey;

/// Header auth accepts requests dated within this many seconds of `now`.
pub const MAX_CLOCK_SKEW_SECS: i64 = 900;

/// What the gateway accepts in a credential scope.
#[derive(Clone, Debug)]
pub struct Verifier {
    /// Regions tenants may sign for (the gateway's region; usually one).
    pub regions: Vec<String>,
    /// `s3`.
    pub service: String,
    pub max_skew_secs: i64,
    /// Accept legacy SigV2 signatures (`AWS AKID:sig`, `AWSAccessKeyId=`
    /// presigned URLs; [`crate::sigv2`]). Off unless configured.
    pub sigv2: bool,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new("us-east-1")
    }
}

/// A request whose signature verified.
#[derive(Clone, Debug)]
pub struct Verified<'a> {
    pub auth: Auth<'a>,
    /// The tenant's signing key for the request's date/region/service: what
    /// the chunk re-signer verifies chunk signatures with.
    pub signing_key: SigningKey,
    /// The request signature: seed of the chunk-signature chain.
    pub seed_signature: Hex64,
}

impl Verifier {
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            regions: vec![region.into()],
            service: "s3".to_owned(),
            max_skew_secs: MAX_CLOCK_SKEW_SECS,
            sigv2: false,
        }
    }

    /// Verifies `auth` (parsed from `req`) under `secret` at time `now`.
    pub fn verify<'a, 'k>(
        &self,
        req: &RequestParts<'a>,
        auth: Auth<'a>,
        key: impl Into<KeyRef<'k>>,
        cache: &dyn SigningKeyCache,
        now: UnixSeconds,
    ) -> Result<Verified<'a>, DenyReason> {
        self.check_scope(&auth)?;
        self.check_time(&auth, now)?;

        let canonical = canonical_request_for(req, &auth);
        let string_to_sign =
            canonical::string_to_sign(auth.amz_date.as_str(), auth.scope(), &canonical);
        // Fail closed: derived keys that do not cover the signed scope (a
        // broker whose feed was asked for other regions) verify nothing.
        let signing_key = key
            .into()
            .signing_key(cache, auth.access_key_id(), auth.scope())
            .ok_or(DenyReason::InternalError(
                "no signing key for the request's date and region",
            ))?;
        let expected = signing_key.sign(string_to_sign.as_bytes());
        if !expected.ct_eq_str(auth.signature.as_bytes()) {
            return Err(DenyReason::SignatureDoesNotMatch(Box::new(
                SignatureMismatch {
                    access_key_id: auth.access_key_id().to_owned(),
                    signature_provided: auth.signature.clone().into_owned(),
                    string_to_sign,
                    canonical_request: canonical,
                },
            )));
        }
        Ok(Verified {
            auth,
            signing_key,
            seed_signature: expected,
        })
    }

    fn check_scope(&self, auth: &Auth<'_>) -> Result<(), DenyReason> {
        let err = |m: String| match auth.location {
            AuthLocation::Header => DenyReason::AuthorizationHeaderMalformed(m.into()),
            AuthLocation::Query => DenyReason::AuthorizationQueryParametersError(m.into()),
        };
        if auth.service() != self.service {
            return Err(err(format!(
                "The authorization header is malformed; incorrect service '{}'. This endpoint belongs to '{}'.",
                auth.service(),
                self.service
            )));
        }
        if !self.regions.iter().any(|r| r == auth.region()) {
            return Err(err(format!(
                "The authorization header is malformed; the region '{}' is wrong; expecting '{}'",
                auth.region(),
                self.regions.first().map(String::as_str).unwrap_or_default()
            )));
        }
        Ok(())
    }

    fn check_time(&self, auth: &Auth<'_>, now: UnixSeconds) -> Result<(), DenyReason> {
        let t = auth.amz_date.unix();
        match auth.expires {
            None => {
                if (now - t).abs() > self.max_skew_secs {
                    return Err(DenyReason::RequestTimeTooSkewed);
                }
            }
            Some(expires) => {
                if t - now > self.max_skew_secs {
                    return Err(DenyReason::RequestNotYetValid);
                }
                if now > t + i64::from(expires) {
                    return Err(DenyReason::RequestExpired);
                }
            }
        }
        Ok(())
    }
}

/// The signing key for `scope` (`date/region/service/aws4_request`), from
/// `cache` when it holds one for this access key and secret, derived (and
/// cached) if not.
pub fn cached_signing_key(
    cache: &dyn SigningKeyCache,
    access_key_id: &str,
    secret: &SecretKey,
    scope: &str,
) -> SigningKey {
    let fp = secret.fingerprint();
    if let Some(k) = cache.get(access_key_id, fp, scope) {
        return k;
    }
    let mut parts = scope.split('/');
    let (date, region, service) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let k = SigningKey::derive(secret, date, region, service);
    cache.insert(access_key_id, fp, scope, k.clone());
    k
}

/// The canonical request the tenant should have signed.
pub fn canonical_request_for(req: &RequestParts<'_>, auth: &Auth<'_>) -> String {
    let mut uri = String::with_capacity(req.path().len() + 8);
    canonical::push_canonical_uri(&mut uri, req.path());
    let mut query = String::with_capacity(req.query().len() + 8);
    canonical::push_canonical_query(
        &mut query,
        req.query(),
        auth.location == AuthLocation::Query,
    );
    canonical::canonical_request(
        req.method,
        &uri,
        &query,
        &auth.signed_headers,
        |name, out| push_request_header(req, name, out),
        auth.payload.as_str(),
    )
}

/// Appends the canonical value of one signed header as the request carries it.
fn push_request_header(req: &RequestParts<'_>, name: &str, out: &mut String) {
    match name {
        "host" => canonical::push_values(out, req.host().into_iter()),
        // Envoy answers `Expect: 100-continue` itself and removes the header
        // before filters see it; clients that signed it sent exactly this.
        "expect" if req.header("expect").is_none() => out.push_str("100-continue"),
        _ => canonical::push_values(out, req.header_all(name)),
    }
}

#[cfg(test)]
mod tests;
