//! The two custom resources, `BucketClaim` and `S3Backend`
//! (`broker.stowage.io/v1alpha1`), generated from these Rust types.
//!
//! Every field name, default, short name and rule comes from
//! `shared/spec/contract.md`. The CEL rules (`x-kubernetes-validations`) are
//! what the API server enforces on create and update; `#[kube(cel)]` also
//! generates `validate_cel` / `validate_cel_update` so the same rules run in
//! tests without an API server (through `kube::core::cel`). What CEL cannot
//! check (the backend exists, the bucket is not another claim's, the admin
//! Secret's namespace) is the admission webhook's job (`webhook.rs`).

// kube's printcolumn(...) attributes repeat `type_ = ...` by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `^[a-z0-9][a-z0-9.-]{2,62}$` (contract: `spec.bucketName`).
pub const BUCKET_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9.-]{2,62}$";
/// Default `S3Backend.spec.bucketNameTemplate`.
pub const DEFAULT_BUCKET_NAME_TEMPLATE: &str = "{{ .Namespace }}-{{ .Name }}";

// ---------------------------------------------------------------------------
// BucketClaim
// ---------------------------------------------------------------------------

/// A tenant's request for a bucket on an `S3Backend` and a virtual credential
/// scoped to it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "broker.stowage.io",
    version = "v1alpha1",
    kind = "BucketClaim",
    namespaced,
    status = "BucketClaimStatus",
    shortname = "bc",
    derive = "PartialEq",
    cel,
    doc = "A request for an S3 bucket on an S3Backend and a virtual credential scoped to it",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Bucket", type_ = "string", json_path = ".status.bucketName"),
    printcolumn(
        name = "Backend",
        type_ = "string",
        json_path = ".spec.backendRef.name"
    ),
    printcolumn(
        name = "AccessKey",
        type_ = "string",
        json_path = ".status.accessKeyId"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".status.boundSecretName",
        priority = 1
    ),
    printcolumn(
        name = "Rotated",
        type_ = "date",
        json_path = ".status.rotatedAt",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("has(oldSelf.bucketName) == has(self.bucketName) && (!has(self.bucketName) || self.bucketName == oldSelf.bucketName)").message("bucketName is immutable").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!self.forceDelete || self.deletionPolicy == 'Delete'").message("forceDelete is only allowed with deletionPolicy: Delete"),
)]
#[serde(rename_all = "camelCase")]
pub struct BucketClaimSpec {
    /// The S3Backend (cluster-scoped) the bucket lives on.
    pub backend_ref: BackendRef,
    /// Bucket name on the backend; default from the backend's
    /// bucketNameTemplate. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{2,62}$"))]
    pub bucket_name: Option<String>,
    /// What happens to the bucket when the claim is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Empty the bucket before deleting it (only with deletionPolicy: Delete).
    #[serde(default)]
    pub force_delete: bool,
    /// Where the consumer Secret is written (default `<claim>-s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_connection_secret_to_ref: Option<LocalSecretRef>,
    #[serde(default)]
    pub rotation_policy: RotationPolicy,
    #[serde(default)]
    pub anonymous_access: AnonymousAccess,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct BackendRef {
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct LocalSecretRef {
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    Delete,
    #[default]
    Retain,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RotationMode {
    #[default]
    Manual,
    TimeBased,
}

/// Default `rotationPolicy.intervalDays`.
pub const DEFAULT_INTERVAL_DAYS: i64 = 90;
/// Minimum `rotationPolicy.intervalDays` for TimeBased rotation.
pub const MIN_INTERVAL_DAYS: i64 = 7;
/// Default `rotationPolicy.overlapSeconds`.
pub const DEFAULT_OVERLAP_SECONDS: i64 = 300;

fn default_interval_days() -> i64 {
    DEFAULT_INTERVAL_DAYS
}
fn default_overlap_seconds() -> i64 {
    DEFAULT_OVERLAP_SECONDS
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("self.mode != 'TimeBased' || self.intervalDays >= 7").message("rotationPolicy.intervalDays must be at least 7 when mode is TimeBased"),
    validation = Rule::new("self.overlapSeconds >= 0").message("rotationPolicy.overlapSeconds must be >= 0"),
)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicy {
    #[serde(default)]
    pub mode: RotationMode,
    #[serde(default = "default_interval_days")]
    pub interval_days: i64,
    #[serde(default = "default_overlap_seconds")]
    pub overlap_seconds: i64,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            mode: RotationMode::Manual,
            interval_days: DEFAULT_INTERVAL_DAYS,
            overlap_seconds: DEFAULT_OVERLAP_SECONDS,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AnonymousMode {
    /// No anonymous binding (`None` on the wire).
    #[default]
    #[serde(rename = "None")]
    Off,
    ReadOnly,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(
    validation = Rule::new("self.perSourceIPRPS >= 0").message("anonymousAccess.perSourceIPRPS must be >= 0"),
)]
#[serde(rename_all = "camelCase")]
pub struct AnonymousAccess {
    #[serde(default)]
    pub mode: AnonymousMode,
    /// Requests per second per source IP; 0 = the proxy default.
    #[serde(default, rename = "perSourceIPRPS")]
    pub per_source_ip_rps: i64,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("!has(self.soft) || !has(self.hard) || quantity(string(self.soft)).compareTo(quantity(string(self.hard))) <= 0").message("quota.soft must not exceed quota.hard"),
)]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft: Option<Quantity>,
    /// Enforced by the gateway (507 EntityTooLarge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard: Option<Quantity>,
}

/// `status.phase`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Creating,
    Bound,
    Failed,
    Deleting,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Creating => "Creating",
            Phase::Bound => "Bound",
            Phase::Failed => "Failed",
            Phase::Deleting => "Deleting",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketClaimStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// RFC 3339; when the current credential took effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What the bucket held at the broker's last scan, against the quota
    /// (absent until the operator polls the broker's usage).
    // Written only by the usage poller (`usage.rs`, its own field manager);
    // the reconciler's status patches never carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ClaimUsage>,
}

/// `status.usage`: the broker's last scan of the claim's bucket (`GET
/// /v1/usage`) against the claim's quota. The poller writes all four fields
/// at once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimUsage {
    /// Bytes the bucket held at the last scan.
    pub used_bytes: i64,
    /// RFC 3339; when that scan began.
    pub last_scan_time: String,
    /// usedBytes is over quota.soft.
    pub soft_exceeded: bool,
    /// usedBytes reached quota.hard: the gateway refuses writes that would
    /// go past it.
    pub hard_exceeded: bool,
}

// ---------------------------------------------------------------------------
// S3Backend
// ---------------------------------------------------------------------------

fn default_region() -> String {
    "us-east-1".to_owned()
}
fn default_access_key_field() -> String {
    bucketgate_core::contract::ENV_AWS_ACCESS_KEY_ID.to_owned()
}
fn default_secret_key_field() -> String {
    bucketgate_core::contract::ENV_AWS_SECRET_ACCESS_KEY.to_owned()
}
fn default_ca_key() -> String {
    "ca.crt".to_owned()
}
fn default_bucket_name_template() -> String {
    DEFAULT_BUCKET_NAME_TEMPLATE.to_owned()
}

/// An upstream S3 endpoint and the admin credentials the gateway re-signs with.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "broker.stowage.io",
    version = "v1alpha1",
    kind = "S3Backend",
    status = "S3BackendStatus",
    shortname = "s3b",
    derive = "PartialEq",
    doc = "An upstream S3 endpoint and where its admin credentials live",
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpoint"),
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
    printcolumn(name = "Buckets", type_ = "integer", json_path = ".status.bucketCount"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct S3BackendSpec {
    #[schemars(regex(pattern = r"^https?://.+"))]
    pub endpoint: String,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub addressing_style: AddressingStyle,
    pub admin_credentials_secret_ref: AdminCredentialsSecretRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTls>,
    #[serde(default = "default_bucket_name_template")]
    pub bucket_name_template: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AddressingStyle {
    #[default]
    Path,
    Virtual,
}

impl From<AddressingStyle> for bucketgate_core::contract::AddressingStyle {
    fn from(a: AddressingStyle) -> Self {
        match a {
            AddressingStyle::Path => Self::Path,
            AddressingStyle::Virtual => Self::Virtual,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminCredentialsSecretRef {
    pub name: String,
    pub namespace: String,
    #[serde(default = "default_access_key_field")]
    pub access_key_field: String,
    #[serde(default = "default_secret_key_field")]
    pub secret_key_field: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendTls {
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<CaBundleSecretRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct CaBundleSecretRef {
    pub name: String,
    pub namespace: String,
    #[serde(default = "default_ca_key")]
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3BackendStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_count: Option<i64>,
}

// ---------------------------------------------------------------------------
// Helpers on the claim
// ---------------------------------------------------------------------------

impl BucketClaim {
    /// The consumer Secret name: `writeConnectionSecretToRef.name`, else
    /// `<claim>-s3`.
    pub fn consumer_secret_name(&self) -> String {
        match &self.spec.write_connection_secret_to_ref {
            Some(r) if !r.name.is_empty() => r.name.clone(),
            _ => bucketgate_core::contract::consumer_secret_name(
                self.metadata.name.as_deref().unwrap_or_default(),
            ),
        }
    }

    /// The value of the `broker.stowage.io/rotate` annotation, if any.
    pub fn rotate_annotation(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a: &BTreeMap<String, String>| {
                a.get(bucketgate_core::contract::ANNOTATION_ROTATE)
            })
            .map(String::as_str)
    }
}

/// S3Backend annotation by which a platform admin lets one claim bind a
/// bucket that already exists on the backend and that no live claim owns
/// (made outside the operator, or kept by a deleted claim's `Retain`).
/// Value: entries `<bucket>=<namespace>/<claim>`, separated by commas or
/// whitespace. Only the S3Backend (cluster-scoped, admin-owned) carries it,
/// so no tenant can grant it to itself.
pub const ANNOTATION_ADOPT: &str = "broker.stowage.io/adopt";

impl S3Backend {
    /// Whether [`ANNOTATION_ADOPT`] lets claim `namespace/name` adopt `bucket`.
    pub fn adoption_allowed(&self, bucket: &str, namespace: &str, name: &str) -> bool {
        let Some(v) = self
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_ADOPT))
        else {
            return false;
        };
        v.split(|c: char| c == ',' || c.is_whitespace())
            .filter_map(|e| e.split_once('='))
            .filter_map(|(b, claim)| Some((b, claim.split_once('/')?)))
            .any(|(b, (ns, n))| b == bucket && ns == namespace && n == name)
    }
}

/// Renders the backend's bucketNameTemplate (`{{ .Namespace }}`,
/// `{{ .Name }}`, spaces inside the braces optional).
pub fn render_bucket_name(template: &str, namespace: &str, name: &str) -> String {
    let mut out = template.to_owned();
    for (var, value) in [("Namespace", namespace), ("Name", name)] {
        for pat in [
            format!("{{{{ .{var} }}}}"),
            format!("{{{{.{var}}}}}"),
            format!("{{{{ .{var}}}}}"),
            format!("{{{{.{var} }}}}"),
        ] {
            out = out.replace(&pat, value);
        }
    }
    out
}

/// Whether `name` matches [`BUCKET_NAME_PATTERN`].
pub fn is_valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
}

// ---------------------------------------------------------------------------
// CRD YAML
// ---------------------------------------------------------------------------

/// Checked-in file names under `deploy/crds/`.
pub const CRD_FILES: [&str; 2] = ["bucketclaim.yaml", "s3backend.yaml"];

/// The YAML of each CRD, in the order of [`CRD_FILES`].
pub fn crd_yaml() -> Result<[String; 2], serde_yaml::Error> {
    Ok([
        serde_yaml::to_string(&BucketClaim::crd())?,
        serde_yaml::to_string(&S3Backend::crd())?,
    ])
}

#[cfg(test)]
mod tests;
