//! Kubernetes Secrets for a claim, rendered by `bucketgate_core::contract`
//! (the code the data plane parses with) and converted to `k8s_openapi`
//! Secrets here. Also the quota conversion (Kubernetes quantity → bytes).

use std::collections::BTreeMap;

use bucketgate_core::contract::{
    self, AnonymousBinding, ClaimRef, ConsumerSecret, InternalRecord, SecretParts,
};
use bucketgate_core::{Credential, Scope, SecretKey, UnixSeconds};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::plan::Existing;

/// Everything needed to render a claim's internal Secret.
#[derive(Clone, Debug)]
pub struct InternalSpec<'a> {
    pub claim: &'a ClaimRef,
    pub generation: u64,
    pub access_key_id: &'a str,
    pub secret: &'a SecretKey,
    pub backend: &'a str,
    pub bucket: &'a str,
    pub quota_soft_bytes: Option<u64>,
    pub quota_hard_bytes: Option<u64>,
    pub expires_at: Option<UnixSeconds>,
    /// The claim's `broker.stowage.io/rotate` value this key was minted under.
    pub rotate_token: Option<&'a str>,
}

/// The internal Secret `vc-<key>` in the operator namespace. No owner
/// reference: a cross-namespace owner would get it garbage-collected.
pub fn internal_secret(spec: &InternalSpec<'_>, operator_namespace: &str) -> Secret {
    let mut cred = Credential::new(
        spec.access_key_id,
        spec.secret.clone(),
        vec![Scope::new(spec.backend, spec.bucket)],
    );
    cred.quota_soft_bytes = spec.quota_soft_bytes;
    cred.quota_hard_bytes = spec.quota_hard_bytes;
    cred.expires_at = spec.expires_at;
    let mut parts = contract::render_internal(&InternalRecord::new(
        spec.claim.clone(),
        spec.generation,
        cred,
    ));
    if let Some(t) = spec.rotate_token {
        parts
            .annotations
            .insert(contract::ANNOTATION_ROTATE.to_owned(), t.to_owned());
    }
    to_secret(&parts, operator_namespace, None)
}

/// The consumer Secret in the claim's namespace, owned by the claim.
pub fn consumer_secret(c: &ConsumerSecret, owner: Option<OwnerReference>) -> Secret {
    let parts = contract::render_consumer(c);
    to_secret(&parts, &c.claim.namespace, owner)
}

/// The anonymous binding `anon-<claim uid>` in the operator namespace.
pub fn anonymous_secret(b: &AnonymousBinding, operator_namespace: &str) -> Secret {
    to_secret(&contract::render_anonymous(b), operator_namespace, None)
}

/// Contract parts → a Secret ready for server-side apply.
pub fn to_secret(parts: &SecretParts, namespace: &str, owner: Option<OwnerReference>) -> Secret {
    let ns = parts
        .namespace
        .clone()
        .unwrap_or_else(|| namespace.to_owned());
    Secret {
        metadata: ObjectMeta {
            name: Some(parts.name.clone()),
            namespace: Some(ns),
            labels: Some(parts.labels.clone()),
            annotations: (!parts.annotations.is_empty()).then(|| parts.annotations.clone()),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(
            parts
                .data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// A Secret → contract parts. Data that is not UTF-8 is dropped (and then
/// fails the contract's parse: closed).
pub fn to_parts(secret: &Secret) -> SecretParts {
    SecretParts {
        name: secret.metadata.name.clone().unwrap_or_default(),
        namespace: secret.metadata.namespace.clone(),
        labels: secret.metadata.labels.clone().unwrap_or_default(),
        annotations: secret.metadata.annotations.clone().unwrap_or_default(),
        data: secret
            .data
            .iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
            .collect(),
    }
}

/// One internal Secret of the claim, parsed.
#[derive(Clone, Debug)]
pub struct Found {
    pub existing: Existing,
    pub record: InternalRecord,
    pub parts: SecretParts,
}

/// Parses an internal Secret for the state machine. A Secret that does not
/// parse yields `None`: it grants nothing to the data plane either.
pub fn parse_found(secret: &Secret) -> Option<Found> {
    let parts = to_parts(secret);
    let record = contract::parse_internal_parts(&parts).ok()?;
    Some(Found {
        existing: Existing {
            secret_name: parts.name.clone(),
            access_key_id: record.credential.access_key_id.clone(),
            generation: record.rotation_generation,
            expires_at: record.credential.expires_at,
            rotate_token: parts.annotations.get(contract::ANNOTATION_ROTATE).cloned(),
        },
        record,
        parts,
    })
}

/// Whether applying `want` would change `have` (labels and annotations we
/// set, and the data).
pub fn differs(have: &SecretParts, want: &Secret) -> bool {
    let want = to_parts(want);
    let sub = |w: &BTreeMap<String, String>, h: &BTreeMap<String, String>| {
        w.iter().any(|(k, v)| h.get(k) != Some(v))
    };
    want.data != have.data
        || sub(&want.labels, &have.labels)
        || sub(&want.annotations, &have.annotations)
}

/// Error for a quantity that is not a whole, non-negative number of bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {0:?}")]
pub struct BadQuantity(pub String);

/// A Kubernetes quantity (`10Gi`, `500M`, `1e9`, `1.5Gi`) as bytes, rounded
/// up to a whole byte.
pub fn quantity_bytes(q: &Quantity) -> Result<u64, BadQuantity> {
    let s = q.0.trim();
    let bad = || BadQuantity(s.to_owned());
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let num = num.strip_prefix('+').unwrap_or(num);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // value = digits / 10^frac.len() * multiplier, in u128 to stay exact.
    let digits: u128 = format!("{int}{frac}").parse().map_err(|_| bad())?;
    let (mul, div_pow10): (u128, u32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "k" => (1_000, 0),
        "M" => (1_000_000, 0),
        "G" => (1_000_000_000, 0),
        "T" => (1_000_000_000_000, 0),
        "P" => (1_000_000_000_000_000, 0),
        "E" => (1_000_000_000_000_000_000, 0),
        "m" => (1, 3),
        e if e.starts_with(['e', 'E']) => {
            let exp: u32 = e[1..].parse().map_err(|_| bad())?;
            (10u128.checked_pow(exp).ok_or_else(bad)?, 0)
        }
        _ => return Err(bad()),
    };
    let frac_len = u32::try_from(frac.len()).map_err(|_| bad())?;
    let scale = 10u128.checked_pow(frac_len + div_pow10).ok_or_else(bad)?;
    let total = digits.checked_mul(mul).ok_or_else(bad)?;
    let bytes = total.div_ceil(scale);
    u64::try_from(bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests;
