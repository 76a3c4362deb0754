//! From an `S3Backend` to a [`BackendConn`]: the admin key from its Secret,
//! the TLS settings (`tls.insecureSkipVerify`, `tls.caBundleSecretRef`).
//!
//! Both Secrets must live in the operator namespace (the admission webhook
//! refuses anything else; this is the second line): admin keys must never
//! sit where a tenant can read them, and the operator's RBAC only reads
//! Secrets there. Used by the BucketClaim reconciler and the S3Backend
//! status reconciler alike.

use bucketgate_core::SecretKey;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

use crate::crd::S3Backend;
use crate::s3::{BackendConn, BackendTls};
use crate::secrets;

/// Why a backend cannot be used; `reason` is the condition / event reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unusable {
    pub reason: &'static str,
    pub message: String,
}

impl Unusable {
    fn admin(message: String) -> Self {
        Self {
            reason: "AdminSecretInvalid",
            message,
        }
    }
    fn ca(message: String) -> Self {
        Self {
            reason: "CaBundleInvalid",
            message,
        }
    }
}

/// Reads the (non-empty) `keys` of a Secret in `namespace`, with one GET.
async fn fields<const N: usize>(
    client: &Client,
    namespace: &str,
    name: &str,
    keys: [&str; N],
) -> Result<Result<[String; N], String>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = api.get_opt(name).await? else {
        return Ok(Err(format!("Secret {namespace}/{name} not found")));
    };
    let parts = secrets::to_parts(&secret);
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for (slot, key) in out.iter_mut().zip(keys) {
        match parts.data.get(key).filter(|v| !v.is_empty()) {
            Some(v) => v.clone_into(slot),
            None => {
                return Ok(Err(format!(
                    "Secret {namespace}/{name} has no (non-empty) key {key:?}"
                )));
            }
        }
    }
    Ok(Ok(out))
}

/// Resolves `backend`. `Ok(Err(_))` is a configuration problem (reported on
/// the claim / backend, retried slowly); `Err` is the API server failing.
pub async fn resolve(
    client: &Client,
    operator_namespace: &str,
    backend: &S3Backend,
) -> Result<Result<BackendConn, Unusable>, kube::Error> {
    let name = backend.name_any();
    let r = &backend.spec.admin_credentials_secret_ref;
    if r.namespace != operator_namespace {
        return Ok(Err(Unusable::admin(format!(
            "S3Backend {name}: admin Secret must live in the operator namespace {operator_namespace:?}, not {:?}",
            r.namespace
        ))));
    }
    let keys = [r.access_key_field.as_str(), r.secret_key_field.as_str()];
    let [ak, sk] = match fields(client, &r.namespace, &r.name, keys).await? {
        Ok(v) => v,
        Err(m) => return Ok(Err(Unusable::admin(format!("S3Backend {name}: {m}")))),
    };
    let tls_spec = backend.spec.tls.clone().unwrap_or_default();
    let tls = if tls_spec.insecure_skip_verify {
        BackendTls::InsecureSkipVerify
    } else if let Some(ca) = &tls_spec.ca_bundle_secret_ref {
        if ca.namespace != operator_namespace {
            return Ok(Err(Unusable::ca(format!(
                "S3Backend {name}: tls.caBundleSecretRef must live in the operator namespace {operator_namespace:?}, not {:?}",
                ca.namespace
            ))));
        }
        match fields(client, &ca.namespace, &ca.name, [ca.key.as_str()]).await? {
            Ok([pem]) => match crate::s3::parse_ca_bundle(pem.as_bytes()) {
                Ok(_) => BackendTls::CaBundle(pem.into_bytes()),
                Err(m) => return Ok(Err(Unusable::ca(format!("S3Backend {name}: {m}")))),
            },
            Err(m) => return Ok(Err(Unusable::ca(format!("S3Backend {name}: {m}")))),
        }
    } else {
        BackendTls::System
    };
    Ok(Ok(BackendConn {
        name,
        endpoint: backend.spec.endpoint.clone(),
        region: backend.spec.region.clone(),
        addressing_style: backend.spec.addressing_style,
        access_key_id: ak,
        secret: SecretKey::new(sk),
        tls,
    }))
}
