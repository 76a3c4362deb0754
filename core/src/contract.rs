//! The Kubernetes Secret contract, in one place.
//!
//! The operator writes these Secrets and the data plane (ext_authz service,
//! proxy-wasm filter) reads them. Stowage kept the two sides in two files and
//! warned that "changing one without the other silently breaks the
//! integration"; here both sides call [`render_internal`] / [`parse_internal`]
//! (and the consumer / anonymous-binding pairs), and a round-trip test plus a
//! golden test of every literal name guards the wire format. Every name below
//! comes from `shared/spec/contract.md`.
//!
//! Data maps are `BTreeMap<String, String>`; callers convert from the
//! Kubernetes `ByteString` (a non-UTF-8 value is the caller's error).
//!
//! # Decisions where the contract is silent
//!
//! * **Anonymous binding role**: the contract names only two role values; we
//!   label anonymous-binding Secrets `broker.stowage.io/role=anonymous-binding`
//!   ([`ROLE_ANONYMOUS_BINDING`]) so the data plane can watch them with their
//!   own selector. Their name is `anon-<claim uid>` (a UID is unique across
//!   namespaces, so two claims named alike never collide).
//! * **What an internal Secret must contain** to parse: data
//!   `access_key_id`, a non-empty `secret_access_key`, and at least one scope
//!   (`bucket_scopes`, else `bucket_name` + `backend`). Labels and
//!   `claim_uid` are optional so a hand-made Secret (only data) still works;
//!   but when a label *is* present it must agree with the data
//!   (`access-key-id`, `claim-uid`) and the role, if present, must be
//!   `virtual-credential`. Data is authoritative for scope: the `backend` /
//!   `bucket` labels are for selectors only and are not compared.
//! * **Expiry fails closed**: an `expires-at` annotation that does not parse
//!   (including an empty value) yields `expires_at = Some(0)` (the epoch:
//!   already expired, and it renders back to the same instant) plus a
//!   [`ContractError::BadTimestamp`] in [`InternalRecord::warnings`]. The key
//!   thus stays in the cache and answers 401 expired; it never becomes
//!   non-expiring, and it is not dropped either (dropping it could let a
//!   SQLite credential with the same key id take over, since Kubernetes wins
//!   only when it has an entry).
//! * **`disabled` and `rps` have no wire form**: they are SQLite-store
//!   concepts. Parsing yields `disabled = false`, `rps = None`. Rendering a
//!   *disabled* credential fails closed: it writes `expires-at` as the epoch,
//!   so the key is refused (401 expired) rather than silently re-enabled. To
//!   disable an operator-managed key, delete its internal Secret.
//! * Quota strings are ASCII decimal digits (surrounding whitespace is
//!   tolerated, an empty value means "not set"); `"0"` means a 0-byte limit,
//!   not "unlimited".
//! * Label values longer than 63 characters are rejected by the API server;
//!   this module does not truncate (claim names are the CRD's concern).

use std::collections::BTreeMap;
use std::fmt;

use crate::credential::{Credential, Scope};
use crate::date::{UnixSeconds, format_rfc3339, parse_rfc3339};
use crate::secret::SecretKey;

// ---------------------------------------------------------------------------
// API group, finalizer, annotations
// ---------------------------------------------------------------------------

/// Object keys under this prefix belong to the gateway: tenants can neither
/// read nor write them (the operator records bucket ownership there).
pub const RESERVED_KEY_PREFIX: &str = ".bucketgate/";
/// The ownership marker the operator writes into every bucket it binds.
pub const OWNER_MARKER_KEY: &str = ".bucketgate/owner.json";

/// CRD API group.
pub const API_GROUP: &str = "broker.stowage.io";
/// CRD API version.
pub const API_VERSION: &str = "v1alpha1";
/// `apiVersion` of the custom resources.
pub const API_GROUP_VERSION: &str = "broker.stowage.io/v1alpha1";
/// Kind of the namespaced claim (short name `bc`).
pub const KIND_BUCKET_CLAIM: &str = "BucketClaim";
/// Kind of the cluster-scoped backend (short name `s3b`).
pub const KIND_S3_BACKEND: &str = "S3Backend";
/// Finalizer the operator puts on every BucketClaim.
pub const FINALIZER_BUCKETCLAIM_PROTECTION: &str = "broker.stowage.io/bucketclaim-protection";

/// Annotation on the internal Secret: RFC 3339 instant after which the key answers 401 expired.
pub const ANNOTATION_EXPIRES_AT: &str = "broker.stowage.io/expires-at";
/// Annotation on the BucketClaim: any change of its value rotates the credential.
pub const ANNOTATION_ROTATE: &str = "broker.stowage.io/rotate";
/// Annotation on a Pod: what the operator's mutating webhook injects
/// ([`INJECT_ENDPOINT`] or [`INJECT_SIDECAR`]; any other value is refused).
pub const ANNOTATION_INJECT: &str = "broker.stowage.io/inject";
/// [`ANNOTATION_INJECT`] value: `AWS_ENDPOINT_URL_S3` = the gateway Service.
pub const INJECT_ENDPOINT: &str = "endpoint";
/// [`ANNOTATION_INJECT`] value: a forwarding sidecar on `localhost:8190` and
/// `AWS_ENDPOINT_URL_S3` pointing at it (spec 003).
pub const INJECT_SIDECAR: &str = "sidecar";

// ---------------------------------------------------------------------------
// Labels (both Secrets carry them; spec 000)
// ---------------------------------------------------------------------------

pub const LABEL_ROLE: &str = "broker.stowage.io/role";
pub const LABEL_CLAIM_NAMESPACE: &str = "broker.stowage.io/claim-namespace";
pub const LABEL_CLAIM_NAME: &str = "broker.stowage.io/claim-name";
pub const LABEL_CLAIM_UID: &str = "broker.stowage.io/claim-uid";
pub const LABEL_ACCESS_KEY_ID: &str = "broker.stowage.io/access-key-id";
pub const LABEL_BACKEND: &str = "broker.stowage.io/backend";
pub const LABEL_BUCKET: &str = "broker.stowage.io/bucket";
pub const LABEL_ROTATION_GENERATION: &str = "broker.stowage.io/rotation-generation";

/// Role of the internal Secret (operator namespace, read by the data plane).
pub const ROLE_VIRTUAL_CREDENTIAL: &str = "virtual-credential";
/// Role of the consumer Secret (claim namespace, mounted by tenants).
pub const ROLE_CONSUMER_SECRET: &str = "consumer-secret";
/// Role of the anonymous-binding Secret. **Our decision**: the contract names
/// no role for it.
pub const ROLE_ANONYMOUS_BINDING: &str = "anonymous-binding";

/// Label selector for every internal Secret (what the data plane watches).
pub const SELECTOR_INTERNAL: &str = "broker.stowage.io/role=virtual-credential";
/// Label selector for every consumer Secret.
pub const SELECTOR_CONSUMER: &str = "broker.stowage.io/role=consumer-secret";
/// Label selector for every anonymous-binding Secret.
pub const SELECTOR_ANONYMOUS: &str = "broker.stowage.io/role=anonymous-binding";

// ---------------------------------------------------------------------------
// Internal Secret data keys
// ---------------------------------------------------------------------------

pub const KEY_ACCESS_KEY_ID: &str = "access_key_id";
pub const KEY_SECRET_ACCESS_KEY: &str = "secret_access_key";
pub const KEY_BUCKET_NAME: &str = "bucket_name";
pub const KEY_BACKEND: &str = "backend";
pub const KEY_CLAIM_UID: &str = "claim_uid";
pub const KEY_BUCKET_SCOPES: &str = "bucket_scopes";
pub const KEY_QUOTA_SOFT_BYTES: &str = "quota_soft_bytes";
pub const KEY_QUOTA_HARD_BYTES: &str = "quota_hard_bytes";

// ---------------------------------------------------------------------------
// Consumer Secret data keys
// ---------------------------------------------------------------------------

pub const ENV_AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const ENV_AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const ENV_AWS_REGION: &str = "AWS_REGION";
pub const ENV_AWS_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
pub const ENV_AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
pub const ENV_AWS_ENDPOINT_URL_S3: &str = "AWS_ENDPOINT_URL_S3";
pub const ENV_BUCKET_NAME: &str = "BUCKET_NAME";
pub const ENV_S3_ADDRESSING_STYLE: &str = "S3_ADDRESSING_STYLE";

// ---------------------------------------------------------------------------
// Anonymous binding data keys (bucket_name, backend, claim_uid shared above)
// ---------------------------------------------------------------------------

pub const KEY_ANONYMOUS_MODE: &str = "anonymous_mode";
pub const KEY_ANONYMOUS_PER_SOURCE_IP_RPS: &str = "anonymous_per_source_ip_rps";
/// The only `anonymous_mode` value that grants access (`anonymousAccess.mode`).
pub const ANONYMOUS_MODE_READ_ONLY: &str = "ReadOnly";
/// `anonymousAccess.mode` value meaning "no binding".
pub const ANONYMOUS_MODE_NONE: &str = "None";

/// Port of the gateway Service (`AWS_ENDPOINT_URL`).
pub const GATEWAY_PORT: u16 = 8090;

/// What [`parse_internal`] uses as `expires_at` when the annotation does not
/// parse: the epoch, i.e. already expired.
pub const INVALID_EXPIRY_AS: UnixSeconds = 0;

// ---------------------------------------------------------------------------
// Names and selectors
// ---------------------------------------------------------------------------

/// `vc-<lower-cased access key id>`.
pub fn internal_secret_name(access_key_id: &str) -> String {
    format!("vc-{}", access_key_id.to_ascii_lowercase())
}

/// Default consumer Secret name: `<claim>-s3`.
pub fn consumer_secret_name(claim_name: &str) -> String {
    format!("{claim_name}-s3")
}

/// `anon-<lower-cased claim uid>`: unique across namespaces.
pub fn anonymous_binding_name(claim_uid: &str) -> String {
    format!("anon-{}", claim_uid.to_ascii_lowercase())
}

/// Selector for every Secret backing one claim (spec 000).
pub fn claim_selector(namespace: &str, name: &str) -> String {
    format!("{LABEL_CLAIM_NAME}={name},{LABEL_CLAIM_NAMESPACE}={namespace}")
}

/// Selector for the internal Secret of one key (forced revocation, spec 001).
pub fn access_key_selector(access_key_id: &str) -> String {
    format!("{SELECTOR_INTERNAL},{LABEL_ACCESS_KEY_ID}={access_key_id}")
}

// ---------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------

/// Metadata and data of a Secret, ready for the caller to turn into a
/// `k8s_openapi` Secret (data values become `ByteString`s).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretParts {
    pub name: String,
    /// `Some` for the consumer Secret (the claim's namespace); `None` for the
    /// internal and anonymous-binding Secrets (the operator namespace, which
    /// only the caller knows).
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub data: BTreeMap<String, String>,
}

/// Debug shows data keys only: data holds secret access keys.
impl fmt::Debug for SecretParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretParts")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("labels", &self.labels)
            .field("annotations", &self.annotations)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The BucketClaim a Secret belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Default, Hash)]
pub struct ClaimRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl ClaimRef {
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        uid: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }
}

/// The internal Secret: the authoritative record the data plane reads.
///
/// The primary scope (`credential.scopes[0]`) gives `bucket_name` / `backend`
/// and the `bucket` / `backend` labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternalRecord {
    /// From labels (namespace, name) and data `claim_uid`; fields are empty
    /// when a hand-made Secret lacks them.
    pub claim: ClaimRef,
    /// Label `rotation-generation`; 0 when absent.
    pub rotation_generation: u64,
    pub credential: Credential,
    /// Non-fatal problems found while parsing (e.g. a bad `expires-at`,
    /// which was made to fail closed). Ignored by [`render_internal`].
    pub warnings: Vec<ContractError>,
}

impl InternalRecord {
    pub fn new(claim: ClaimRef, rotation_generation: u64, credential: Credential) -> Self {
        Self {
            claim,
            rotation_generation,
            credential,
            warnings: Vec::new(),
        }
    }

    pub fn primary_scope(&self) -> Option<&Scope> {
        self.credential.scopes.first()
    }

    pub fn secret_name(&self) -> String {
        internal_secret_name(&self.credential.access_key_id)
    }
}

/// `S3_ADDRESSING_STYLE` (`S3Backend.spec.addressingStyle`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum AddressingStyle {
    #[default]
    Path,
    Virtual,
}

impl AddressingStyle {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressingStyle::Path => "path",
            AddressingStyle::Virtual => "virtual",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "path" => Some(AddressingStyle::Path),
            "virtual" => Some(AddressingStyle::Virtual),
            _ => None,
        }
    }
}

/// Everything the consumer Secret carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerSecret {
    pub claim: ClaimRef,
    /// `writeConnectionSecretToRef.name`, default [`consumer_secret_name`].
    pub secret_name: String,
    pub access_key_id: String,
    pub secret: SecretKey,
    /// Written to both `AWS_REGION` and `AWS_DEFAULT_REGION`.
    pub region: String,
    /// The gateway Service URL, written to both `AWS_ENDPOINT_URL` and
    /// `AWS_ENDPOINT_URL_S3`.
    pub endpoint_url: String,
    pub bucket: String,
    pub backend: String,
    pub addressing_style: AddressingStyle,
    pub rotation_generation: u64,
}

/// An anonymous (ReadOnly) binding of a claim's bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnonymousBinding {
    pub claim: ClaimRef,
    pub scope: Scope,
    /// `anonymousAccess.perSourceIPRPS`; 0 = the proxy default.
    pub per_source_ip_rps: u32,
}

impl AnonymousBinding {
    pub fn secret_name(&self) -> String {
        anonymous_binding_name(&self.claim.uid)
    }

    /// The per-source-IP rate to enforce, given the proxy default.
    pub fn effective_rps(&self, proxy_default: u32) -> u32 {
        if self.per_source_ip_rps == 0 {
            proxy_default
        } else {
            self.per_source_ip_rps
        }
    }
}

/// Why a Secret does not fit the contract. `Display` names keys and labels,
/// never values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContractError {
    /// A required data key is absent.
    MissingKey(&'static str),
    /// A required data key is present but empty.
    EmptyValue(&'static str),
    /// `bucket_scopes` is not a JSON list of `{"bucket","backend"}`.
    BadJson {
        key: &'static str,
        line: usize,
        column: usize,
    },
    /// A scope with an empty bucket or backend.
    InvalidScope,
    /// Neither a non-empty `bucket_scopes` nor `bucket_name` + `backend`.
    NoScope,
    /// A value that must be a decimal integer is not (key or label name).
    BadNumber(&'static str),
    /// A timestamp annotation that is not RFC 3339.
    BadTimestamp(&'static str),
    /// A label disagrees with the data key it mirrors.
    LabelMismatch {
        label: &'static str,
        key: &'static str,
    },
    /// The role label names another kind of Secret.
    WrongRole { expected: &'static str },
    /// `anonymous_mode` is not `ReadOnly`.
    UnsupportedAnonymousMode,
    /// `S3_ADDRESSING_STYLE` is neither `path` nor `virtual`.
    BadAddressingStyle,
}

impl fmt::Display for ContractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContractError::MissingKey(k) => write!(f, "secret data key `{k}` is missing"),
            ContractError::EmptyValue(k) => write!(f, "secret data key `{k}` is empty"),
            ContractError::BadJson { key, line, column } => write!(
                f,
                "secret data key `{key}` is not a JSON list of {{\"bucket\",\"backend\"}} (line {line}, column {column})"
            ),
            ContractError::InvalidScope => {
                write!(f, "a bucket scope has an empty bucket or backend")
            }
            ContractError::NoScope => write!(
                f,
                "no bucket scope: neither `{KEY_BUCKET_SCOPES}` nor `{KEY_BUCKET_NAME}` + `{KEY_BACKEND}`"
            ),
            ContractError::BadNumber(k) => write!(f, "`{k}` is not a decimal integer"),
            ContractError::BadTimestamp(k) => {
                write!(f, "annotation `{k}` is not an RFC 3339 timestamp")
            }
            ContractError::LabelMismatch { label, key } => {
                write!(f, "label `{label}` disagrees with secret data key `{key}`")
            }
            ContractError::WrongRole { expected } => {
                write!(f, "label `{LABEL_ROLE}` is not `{expected}`")
            }
            ContractError::UnsupportedAnonymousMode => write!(
                f,
                "`{KEY_ANONYMOUS_MODE}` is not `{ANONYMOUS_MODE_READ_ONLY}`"
            ),
            ContractError::BadAddressingStyle => write!(
                f,
                "`{ENV_S3_ADDRESSING_STYLE}` is neither `path` nor `virtual`"
            ),
        }
    }
}

impl std::error::Error for ContractError {}

// ---------------------------------------------------------------------------
// Internal Secret
// ---------------------------------------------------------------------------

fn put(map: &mut BTreeMap<String, String>, k: &str, v: impl Into<String>) {
    map.insert(k.to_owned(), v.into());
}

fn claim_labels(role: &str, claim: &ClaimRef, labels: &mut BTreeMap<String, String>) {
    put(labels, LABEL_ROLE, role);
    put(labels, LABEL_CLAIM_NAMESPACE, claim.namespace.as_str());
    put(labels, LABEL_CLAIM_NAME, claim.name.as_str());
    put(labels, LABEL_CLAIM_UID, claim.uid.as_str());
}

/// Formats an expiry; out-of-range instants are clamped to the range RFC 3339
/// can express so that "expired" stays expired and "far future" stays far.
fn format_expiry(t: UnixSeconds) -> String {
    // 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
    const MIN: UnixSeconds = -62_167_219_200;
    const MAX: UnixSeconds = 253_402_300_799;
    format_rfc3339(t.clamp(MIN, MAX)).unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Renders the internal Secret `vc-<key id>`.
///
/// Writes `bucket_scopes` whenever there are scopes (the first one also as
/// `bucket_name` / `backend` and the `bucket` / `backend` labels), quotas
/// only when set, and `expires-at` only when set — or as the epoch when the
/// credential is disabled (see the module docs). A credential without scopes
/// renders without any scope key and will not parse back: it is unusable by
/// construction.
pub fn render_internal(record: &InternalRecord) -> SecretParts {
    let cred = &record.credential;
    let mut labels = BTreeMap::new();
    claim_labels(ROLE_VIRTUAL_CREDENTIAL, &record.claim, &mut labels);
    put(
        &mut labels,
        LABEL_ACCESS_KEY_ID,
        cred.access_key_id.as_str(),
    );
    put(
        &mut labels,
        LABEL_ROTATION_GENERATION,
        record.rotation_generation.to_string(),
    );

    let mut data = BTreeMap::new();
    put(&mut data, KEY_ACCESS_KEY_ID, cred.access_key_id.as_str());
    put(&mut data, KEY_SECRET_ACCESS_KEY, cred.secret.expose());
    put(&mut data, KEY_CLAIM_UID, record.claim.uid.as_str());
    if let Some(first) = cred.scopes.first() {
        put(&mut labels, LABEL_BACKEND, first.backend.as_str());
        put(&mut labels, LABEL_BUCKET, first.bucket.as_str());
        put(&mut data, KEY_BUCKET_NAME, first.bucket.as_str());
        put(&mut data, KEY_BACKEND, first.backend.as_str());
        // Serialising a Vec of two-string structs cannot fail; if it ever
        // did, an empty value fails to parse (closed).
        put(
            &mut data,
            KEY_BUCKET_SCOPES,
            serde_json::to_string(&cred.scopes).unwrap_or_default(),
        );
    }
    if let Some(q) = cred.quota_soft_bytes {
        put(&mut data, KEY_QUOTA_SOFT_BYTES, q.to_string());
    }
    if let Some(q) = cred.quota_hard_bytes {
        put(&mut data, KEY_QUOTA_HARD_BYTES, q.to_string());
    }

    let mut annotations = BTreeMap::new();
    let expiry = if cred.disabled {
        Some(
            cred.expires_at
                .map_or(INVALID_EXPIRY_AS, |t| t.min(INVALID_EXPIRY_AS)),
        )
    } else {
        cred.expires_at
    };
    if let Some(t) = expiry {
        put(&mut annotations, ANNOTATION_EXPIRES_AT, format_expiry(t));
    }

    SecretParts {
        name: internal_secret_name(&cred.access_key_id),
        namespace: None,
        labels,
        annotations,
        data,
    }
}

fn required<'a>(
    data: &'a BTreeMap<String, String>,
    key: &'static str,
) -> Result<&'a str, ContractError> {
    match data.get(key) {
        None => Err(ContractError::MissingKey(key)),
        Some(v) if v.is_empty() => Err(ContractError::EmptyValue(key)),
        Some(v) => Ok(v.as_str()),
    }
}

/// A non-empty, trimmed value or `None`.
fn optional<'a>(map: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    map.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn parse_decimal(s: &str, key: &'static str) -> Result<u64, ContractError> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ContractError::BadNumber(key));
    }
    s.parse().map_err(|_| ContractError::BadNumber(key))
}

fn optional_decimal(
    map: &BTreeMap<String, String>,
    key: &'static str,
) -> Result<Option<u64>, ContractError> {
    optional(map, key)
        .map(|v| parse_decimal(v, key))
        .transpose()
}

fn check_role(
    labels: &BTreeMap<String, String>,
    expected: &'static str,
) -> Result<(), ContractError> {
    match labels.get(LABEL_ROLE) {
        Some(r) if r.trim() != expected => Err(ContractError::WrongRole { expected }),
        _ => Ok(()),
    }
}

/// The claim: namespace and name from labels, uid from data `claim_uid`
/// (else the label); label and data must agree when both are present.
fn parse_claim(
    labels: &BTreeMap<String, String>,
    data: &BTreeMap<String, String>,
) -> Result<ClaimRef, ContractError> {
    let data_uid = optional(data, KEY_CLAIM_UID);
    let label_uid = optional(labels, LABEL_CLAIM_UID);
    if let (Some(d), Some(l)) = (data_uid, label_uid)
        && d != l
    {
        return Err(ContractError::LabelMismatch {
            label: LABEL_CLAIM_UID,
            key: KEY_CLAIM_UID,
        });
    }
    Ok(ClaimRef {
        namespace: optional(labels, LABEL_CLAIM_NAMESPACE)
            .unwrap_or_default()
            .to_owned(),
        name: optional(labels, LABEL_CLAIM_NAME)
            .unwrap_or_default()
            .to_owned(),
        uid: data_uid.or(label_uid).unwrap_or_default().to_owned(),
    })
}

fn check_scope(s: &Scope) -> Result<(), ContractError> {
    if s.bucket.trim().is_empty() || s.backend.trim().is_empty() {
        Err(ContractError::InvalidScope)
    } else {
        Ok(())
    }
}

/// `bucket_scopes` (preferred when present and non-empty), else
/// `bucket_name` + `backend`. Both keys of the fallback are required.
fn parse_scopes(data: &BTreeMap<String, String>) -> Result<Vec<Scope>, ContractError> {
    if let Some(json) = data.get(KEY_BUCKET_SCOPES).filter(|v| !v.trim().is_empty()) {
        let scopes: Vec<Scope> =
            serde_json::from_str(json).map_err(|e| ContractError::BadJson {
                key: KEY_BUCKET_SCOPES,
                line: e.line(),
                column: e.column(),
            })?;
        if !scopes.is_empty() {
            for s in &scopes {
                check_scope(s)?;
            }
            return Ok(scopes);
        }
    }
    match (data.get(KEY_BUCKET_NAME), data.get(KEY_BACKEND)) {
        (None, None) => Err(ContractError::NoScope),
        _ => {
            let bucket = required(data, KEY_BUCKET_NAME)?.trim();
            let backend = required(data, KEY_BACKEND)?.trim();
            let s = Scope::new(backend, bucket);
            check_scope(&s)?;
            Ok(vec![s])
        }
    }
}

/// Parses an internal Secret. See the module docs for what is required and
/// how a bad `expires-at` fails closed.
pub fn parse_internal(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    data: &BTreeMap<String, String>,
) -> Result<InternalRecord, ContractError> {
    check_role(labels, ROLE_VIRTUAL_CREDENTIAL)?;
    let access_key_id = required(data, KEY_ACCESS_KEY_ID)?.trim();
    if access_key_id.is_empty() {
        return Err(ContractError::EmptyValue(KEY_ACCESS_KEY_ID));
    }
    if let Some(l) = labels.get(LABEL_ACCESS_KEY_ID)
        && l.trim() != access_key_id
    {
        return Err(ContractError::LabelMismatch {
            label: LABEL_ACCESS_KEY_ID,
            key: KEY_ACCESS_KEY_ID,
        });
    }
    // The secret is used byte for byte: no trimming.
    let secret = required(data, KEY_SECRET_ACCESS_KEY)?;
    let claim = parse_claim(labels, data)?;
    let rotation_generation =
        optional_decimal(labels, LABEL_ROTATION_GENERATION)?.unwrap_or_default();
    let scopes = parse_scopes(data)?;

    let mut credential = Credential::new(access_key_id, secret, scopes);
    credential.quota_soft_bytes = optional_decimal(data, KEY_QUOTA_SOFT_BYTES)?;
    credential.quota_hard_bytes = optional_decimal(data, KEY_QUOTA_HARD_BYTES)?;

    let mut warnings = Vec::new();
    if let Some(raw) = annotations.get(ANNOTATION_EXPIRES_AT) {
        credential.expires_at = Some(match parse_rfc3339(raw) {
            Some(t) => t,
            None => {
                warnings.push(ContractError::BadTimestamp(ANNOTATION_EXPIRES_AT));
                INVALID_EXPIRY_AS
            }
        });
    }

    Ok(InternalRecord {
        claim,
        rotation_generation,
        credential,
        warnings,
    })
}

/// [`parse_internal`] on rendered parts.
pub fn parse_internal_parts(parts: &SecretParts) -> Result<InternalRecord, ContractError> {
    parse_internal(&parts.labels, &parts.annotations, &parts.data)
}

// ---------------------------------------------------------------------------
// Consumer Secret
// ---------------------------------------------------------------------------

/// Renders the consumer Secret (claim namespace, role `consumer-secret`,
/// all eight `AWS_*` / `BUCKET_NAME` / `S3_ADDRESSING_STYLE` keys).
pub fn render_consumer(c: &ConsumerSecret) -> SecretParts {
    let mut labels = BTreeMap::new();
    claim_labels(ROLE_CONSUMER_SECRET, &c.claim, &mut labels);
    put(&mut labels, LABEL_ACCESS_KEY_ID, c.access_key_id.as_str());
    put(&mut labels, LABEL_BACKEND, c.backend.as_str());
    put(&mut labels, LABEL_BUCKET, c.bucket.as_str());
    put(
        &mut labels,
        LABEL_ROTATION_GENERATION,
        c.rotation_generation.to_string(),
    );

    let mut data = BTreeMap::new();
    put(&mut data, ENV_AWS_ACCESS_KEY_ID, c.access_key_id.as_str());
    put(&mut data, ENV_AWS_SECRET_ACCESS_KEY, c.secret.expose());
    put(&mut data, ENV_AWS_REGION, c.region.as_str());
    put(&mut data, ENV_AWS_DEFAULT_REGION, c.region.as_str());
    put(&mut data, ENV_AWS_ENDPOINT_URL, c.endpoint_url.as_str());
    put(&mut data, ENV_AWS_ENDPOINT_URL_S3, c.endpoint_url.as_str());
    put(&mut data, ENV_BUCKET_NAME, c.bucket.as_str());
    put(
        &mut data,
        ENV_S3_ADDRESSING_STYLE,
        c.addressing_style.as_str(),
    );

    SecretParts {
        name: c.secret_name.clone(),
        namespace: Some(c.claim.namespace.clone()),
        labels,
        annotations: BTreeMap::new(),
        data,
    }
}

/// Parses a consumer Secret (e.g. for the operator to read back what it
/// wrote). Requires the key id, secret, region, endpoint and bucket;
/// `S3_ADDRESSING_STYLE` defaults to `path`; claim and backend come from
/// the labels.
pub fn parse_consumer(parts: &SecretParts) -> Result<ConsumerSecret, ContractError> {
    check_role(&parts.labels, ROLE_CONSUMER_SECRET)?;
    let data = &parts.data;
    let access_key_id = required(data, ENV_AWS_ACCESS_KEY_ID)?.trim();
    if let Some(l) = parts.labels.get(LABEL_ACCESS_KEY_ID)
        && l.trim() != access_key_id
    {
        return Err(ContractError::LabelMismatch {
            label: LABEL_ACCESS_KEY_ID,
            key: ENV_AWS_ACCESS_KEY_ID,
        });
    }
    let addressing_style = match optional(data, ENV_S3_ADDRESSING_STYLE) {
        None => AddressingStyle::default(),
        Some(s) => AddressingStyle::parse(s).ok_or(ContractError::BadAddressingStyle)?,
    };
    let labels = &parts.labels;
    Ok(ConsumerSecret {
        claim: ClaimRef {
            namespace: optional(labels, LABEL_CLAIM_NAMESPACE)
                .map(str::to_owned)
                .or_else(|| parts.namespace.clone())
                .unwrap_or_default(),
            name: optional(labels, LABEL_CLAIM_NAME)
                .unwrap_or_default()
                .to_owned(),
            uid: optional(labels, LABEL_CLAIM_UID)
                .unwrap_or_default()
                .to_owned(),
        },
        secret_name: parts.name.clone(),
        access_key_id: access_key_id.to_owned(),
        secret: SecretKey::new(required(data, ENV_AWS_SECRET_ACCESS_KEY)?),
        region: required(data, ENV_AWS_REGION)?.to_owned(),
        endpoint_url: required(data, ENV_AWS_ENDPOINT_URL)?.to_owned(),
        bucket: required(data, ENV_BUCKET_NAME)?.to_owned(),
        backend: optional(labels, LABEL_BACKEND)
            .unwrap_or_default()
            .to_owned(),
        addressing_style,
        rotation_generation: optional_decimal(labels, LABEL_ROTATION_GENERATION)?
            .unwrap_or_default(),
    })
}

// ---------------------------------------------------------------------------
// Anonymous binding
// ---------------------------------------------------------------------------

/// Renders the anonymous-binding Secret `anon-<claim uid>` (operator
/// namespace, role `anonymous-binding`, `anonymous_mode=ReadOnly`).
pub fn render_anonymous(b: &AnonymousBinding) -> SecretParts {
    let mut labels = BTreeMap::new();
    claim_labels(ROLE_ANONYMOUS_BINDING, &b.claim, &mut labels);
    put(&mut labels, LABEL_BACKEND, b.scope.backend.as_str());
    put(&mut labels, LABEL_BUCKET, b.scope.bucket.as_str());

    let mut data = BTreeMap::new();
    put(&mut data, KEY_BUCKET_NAME, b.scope.bucket.as_str());
    put(&mut data, KEY_BACKEND, b.scope.backend.as_str());
    put(&mut data, KEY_CLAIM_UID, b.claim.uid.as_str());
    put(&mut data, KEY_ANONYMOUS_MODE, ANONYMOUS_MODE_READ_ONLY);
    put(
        &mut data,
        KEY_ANONYMOUS_PER_SOURCE_IP_RPS,
        b.per_source_ip_rps.to_string(),
    );

    SecretParts {
        name: anonymous_binding_name(&b.claim.uid),
        namespace: None,
        labels,
        annotations: BTreeMap::new(),
        data,
    }
}

/// Parses an anonymous binding. `bucket_name`, `backend` and
/// `anonymous_mode` are required, and the mode must be `ReadOnly` (anything
/// else grants nothing: fail closed). A missing or empty rps means 0, the
/// proxy default; a malformed or out-of-range one is an error.
pub fn parse_anonymous(
    labels: &BTreeMap<String, String>,
    data: &BTreeMap<String, String>,
) -> Result<AnonymousBinding, ContractError> {
    check_role(labels, ROLE_ANONYMOUS_BINDING)?;
    let mode = required(data, KEY_ANONYMOUS_MODE)?;
    if !mode.trim().eq_ignore_ascii_case(ANONYMOUS_MODE_READ_ONLY) {
        return Err(ContractError::UnsupportedAnonymousMode);
    }
    let scope = Scope::new(
        required(data, KEY_BACKEND)?.trim(),
        required(data, KEY_BUCKET_NAME)?.trim(),
    );
    check_scope(&scope)?;
    let rps = optional_decimal(data, KEY_ANONYMOUS_PER_SOURCE_IP_RPS)?.unwrap_or_default();
    let per_source_ip_rps = u32::try_from(rps)
        .map_err(|_| ContractError::BadNumber(KEY_ANONYMOUS_PER_SOURCE_IP_RPS))?;
    Ok(AnonymousBinding {
        claim: parse_claim(labels, data)?,
        scope,
        per_source_ip_rps,
    })
}

/// [`parse_anonymous`] on rendered parts.
pub fn parse_anonymous_parts(parts: &SecretParts) -> Result<AnonymousBinding, ContractError> {
    parse_anonymous(&parts.labels, &parts.data)
}

#[cfg(test)]
mod tests;
