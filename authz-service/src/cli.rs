//! The command line: `serve` and the admin commands on the SQLite store
//! (`creds create|list|show|rotate|revoke|disable|enable`, `anonymous
//! add|remove|list`). The admin commands write to any `io::Write` so tests
//! read what a user would see.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use std::collections::BTreeSet;

use bucketgate_core::credential::{AnonymousBinding, Credential, Scope};
use bucketgate_core::date::{UnixSeconds, format_rfc3339};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::store::{
    Store, StoredAnonymousBinding, StoredCredential, generate_access_key_id, generate_secret,
};

#[derive(Debug, Parser)]
#[command(
    name = "bucketgate-authz",
    version,
    about = "bucketgate credential broker and ext_authz data plane"
)]
pub struct Cli {
    /// Service configuration (JSON); flags override it.
    #[arg(long, global = true, env = "BUCKETGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The SQLite credential store.
    #[arg(long, global = true, env = "BUCKETGATE_DATABASE")]
    pub database: Option<PathBuf>,
    /// The store key file (used when STOWAGE_SECRET_KEY is unset; created
    /// with mode 0600 when missing). Default: <database>.key.
    #[arg(long, global = true, env = "BUCKETGATE_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker: feed, health, readiness and metrics over HTTP.
    Serve(ServeArgs),
    /// Manage credentials in the SQLite store.
    #[command(subcommand)]
    Creds(CredsCommand),
    /// Manage anonymous (ReadOnly) bucket bindings in the SQLite store.
    #[command(subcommand)]
    Anonymous(AnonymousCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Feed / health / readiness / metrics listener.
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// Watch internal Secrets in Kubernetes (readiness waits for the first sync).
    #[arg(long)]
    pub kube: bool,
    /// The operator namespace (default: the client's namespace).
    #[arg(long)]
    pub kube_namespace: Option<String>,
    /// SQLite change check period, milliseconds.
    #[arg(long)]
    pub store_poll_ms: Option<u64>,
    /// Envoy ext_authz gRPC listener.
    #[arg(long, conflicts_with = "grpc_listen_unix")]
    pub grpc_listen: Option<SocketAddr>,
    /// Envoy ext_authz gRPC on a Unix domain socket at this path instead
    /// (Envoy on the same host or in the same Pod; the socket is made
    /// mode 0660, plain gRPC: its file permissions are the access control).
    #[arg(long)]
    pub grpc_listen_unix: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CredsCommand {
    /// Create a credential; prints its key and secret once.
    Create(CreateArgs),
    /// List credentials (never secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one credential (never its secret).
    Show {
        access_key_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Issue a new key with the same scopes and limits; the old key
    /// expires after --overlap. Prints the new key and secret once.
    Rotate {
        access_key_id: String,
        /// How long the old key keeps working (e.g. 0, 300, 5m, 1h).
        #[arg(long, default_value = "0", value_parser = parse_duration)]
        overlap: u64,
        #[arg(long)]
        json: bool,
    },
    /// Delete a credential: it stops verifying at once.
    Revoke { access_key_id: String },
    /// Disable a credential (401) without deleting it.
    Disable { access_key_id: String },
    /// Enable a disabled credential.
    Enable { access_key_id: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A scope, `backend:bucket` (repeatable, at least one).
    #[arg(long = "bucket", required = true, value_parser = parse_scope)]
    pub buckets: Vec<Scope>,
    /// Requests per second for this key (default: the proxy's per-key limit).
    #[arg(long)]
    pub rps: Option<u32>,
    /// Lifetime (e.g. 3600, 90m, 12h, 30d); default: no expiry.
    #[arg(long, value_parser = parse_duration)]
    pub expires_in: Option<u64>,
    /// Hard quota in bytes (suffixes K, M, G, T or Ki, Mi, Gi, Ti).
    #[arg(long, value_parser = parse_bytes)]
    pub quota: Option<u64>,
    /// Soft quota in bytes (reported, not enforced).
    #[arg(long, value_parser = parse_bytes)]
    pub quota_soft: Option<u64>,
    /// Use this access key id instead of a generated one.
    #[arg(long)]
    pub access_key_id: Option<String>,
    /// A note (who or what the key is for).
    #[arg(long)]
    pub description: Option<String>,
    /// Create this many credentials with the same settings, in one
    /// transaction (a fleet of workloads, a load test); with --json, one
    /// line per credential.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AnonymousCommand {
    /// Allow unsigned reads (GET, HEAD, listings) of a bucket through a
    /// backend. The backend must be one the config (--config) names.
    Add(AnonymousAddArgs),
    /// Remove a bucket's binding: its unsigned reads are refused again.
    Remove {
        #[arg(long)]
        bucket: String,
    },
    /// List the store's bindings (those from Kubernetes Secrets are not
    /// in the store).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct AnonymousAddArgs {
    /// The bucket anonymous clients may read.
    #[arg(long)]
    pub bucket: String,
    /// The backend that serves it.
    #[arg(long)]
    pub backend: String,
    /// Requests per second per client address; 0: the proxy default
    /// (`s3_proxy.anonymous_per_source_ip_rps`).
    #[arg(long, default_value_t = 0)]
    pub per_source_ip_rps: u32,
}

/// `backend:bucket`.
pub fn parse_scope(s: &str) -> Result<Scope, String> {
    match s.split_once(':') {
        Some((backend, bucket)) if !backend.is_empty() && !bucket.is_empty() => {
            Ok(Scope::new(backend, bucket))
        }
        _ => Err(format!("'{s}' is not backend:bucket")),
    }
}

/// Seconds, or a number with s, m, h or d.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{s}' is not a duration (e.g. 3600, 90m, 12h, 30d)"))
}

/// Bytes, with an optional K/M/G/T (powers of 1000) or Ki/Mi/Gi/Ti (1024) suffix.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (num, mult) = units
        .iter()
        .find_map(|(u, m)| s.strip_suffix(u).map(|n| (n, *m)))
        .unwrap_or((s, 1));
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{s}' is not a size in bytes (e.g. 1073741824, 10Gi, 500M)"))
}

fn time_str(t: UnixSeconds) -> String {
    format_rfc3339(t).unwrap_or_else(|| t.to_string())
}

fn scopes_str(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| format!("{}:{}", s.backend, s.bucket))
        .collect::<Vec<_>>()
        .join(",")
}

/// The state a user sees: active, disabled or expired.
fn state(c: &Credential, now: UnixSeconds) -> &'static str {
    match c.check_usable(now) {
        Ok(()) => "active",
        Err(_) if c.disabled => "disabled",
        Err(_) => "expired",
    }
}

fn describe(s: &StoredCredential, now: UnixSeconds) -> serde_json::Value {
    let c = &s.credential;
    json!({
        "access_key_id": c.access_key_id,
        "scopes": c.scopes,
        "state": state(c, now),
        "disabled": c.disabled,
        "expires_at": c.expires_at.map(time_str),
        "rps": c.rps,
        "quota_soft_bytes": c.quota_soft_bytes,
        "quota_hard_bytes": c.quota_hard_bytes,
        "description": s.description,
        "created_at": time_str(s.created_at),
        "updated_at": time_str(s.updated_at),
    })
}

fn print_secret(out: &mut dyn Write, c: &Credential, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        let v = json!({
            "access_key_id": c.access_key_id,
            "secret_access_key": c.secret.expose(),
            "scopes": c.scopes,
            "expires_at": c.expires_at.map(time_str),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "access_key_id:     {}", c.access_key_id)?;
        writeln!(out, "secret_access_key: {}", c.secret.expose())?;
        writeln!(out, "scopes:            {}", scopes_str(&c.scopes))?;
        if let Some(t) = c.expires_at {
            writeln!(out, "expires_at:        {}", time_str(t))?;
        }
        writeln!(out, "The secret is shown only now; it cannot be read back.")?;
    }
    Ok(())
}

/// Runs one creds command against `store` at time `now`.
pub fn run_creds(
    cmd: CredsCommand,
    store: &mut Store,
    now: UnixSeconds,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match cmd {
        CredsCommand::Create(a) => {
            if a.count > 1 && a.access_key_id.is_some() {
                bail!("--access-key-id names one credential: it cannot go with --count");
            }
            if let (Some(soft), Some(hard)) = (a.quota_soft, a.quota)
                && soft > hard
            {
                bail!("--quota-soft must not exceed --quota");
            }
            let mut made = Vec::with_capacity(a.count as usize);
            for _ in 0..a.count {
                let id = match &a.access_key_id {
                    Some(id) => {
                        if id.len() < 16
                            || id.len() > 128
                            || !id.bytes().all(|b| b.is_ascii_alphanumeric())
                        {
                            bail!("--access-key-id must be 16 to 128 ASCII letters or digits");
                        }
                        id.clone()
                    }
                    None => generate_access_key_id()?,
                };
                let secret = generate_secret()?;
                let mut c = Credential::new(id, secret.as_str(), a.buckets.clone());
                c.rps = a.rps;
                c.quota_hard_bytes = a.quota;
                c.quota_soft_bytes = a.quota_soft;
                c.expires_at = a
                    .expires_in
                    .map(|s| now.saturating_add(i64::try_from(s).unwrap_or(i64::MAX)));
                made.push(c);
            }
            store.insert_all(&made, a.description.as_deref(), now)?;
            for c in &made {
                print_secret(out, c, a.json)?;
            }
        }
        CredsCommand::List { json } => {
            let all = store.list()?;
            if json {
                let v: Vec<_> = all.iter().map(|s| describe(s, now)).collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                writeln!(
                    out,
                    "{:<24} {:<9} {:<21} {:<6} SCOPES",
                    "ACCESS KEY ID", "STATE", "EXPIRES", "RPS"
                )?;
                for s in &all {
                    let c = &s.credential;
                    writeln!(
                        out,
                        "{:<24} {:<9} {:<21} {:<6} {}",
                        c.access_key_id,
                        state(c, now),
                        c.expires_at.map(time_str).unwrap_or_else(|| "-".into()),
                        c.rps.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                        scopes_str(&c.scopes)
                    )?;
                }
            }
        }
        CredsCommand::Show {
            access_key_id,
            json,
        } => {
            let s = store
                .get(&access_key_id)?
                .with_context(|| format!("no credential with access key {access_key_id}"))?;
            let v = describe(&s, now);
            if json {
                writeln!(out, "{v}")?;
            } else if let serde_json::Value::Object(m) = v {
                for (k, v) in m {
                    let v = match v {
                        serde_json::Value::Null => "-".to_owned(),
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Array(_) => scopes_str(&s.credential.scopes),
                        other => other.to_string(),
                    };
                    writeln!(out, "{k:<17} {v}")?;
                }
            }
        }
        CredsCommand::Rotate {
            access_key_id,
            overlap,
            json,
        } => {
            let new_id = generate_access_key_id()?;
            let secret = generate_secret()?;
            let old_expiry = now.saturating_add(i64::try_from(overlap).unwrap_or(i64::MAX));
            let c = store.rotate(&access_key_id, &new_id, &secret, old_expiry, now)?;
            if !json {
                writeln!(
                    out,
                    "{access_key_id} expires at {}; its replacement:",
                    time_str(old_expiry)
                )?;
            }
            print_secret(out, &c, json)?;
        }
        CredsCommand::Revoke { access_key_id } => {
            store.delete(&access_key_id)?;
            writeln!(out, "revoked {access_key_id}")?;
        }
        CredsCommand::Disable { access_key_id } => {
            store.set_disabled(&access_key_id, true, now)?;
            writeln!(out, "disabled {access_key_id}")?;
        }
        CredsCommand::Enable { access_key_id } => {
            store.set_disabled(&access_key_id, false, now)?;
            writeln!(out, "enabled {access_key_id}")?;
        }
    }
    Ok(())
}

fn rps_str(per_source_ip_rps: u32) -> String {
    if per_source_ip_rps == 0 {
        "default".to_owned()
    } else {
        per_source_ip_rps.to_string()
    }
}

fn describe_anonymous(s: &StoredAnonymousBinding) -> serde_json::Value {
    json!({
        "bucket": s.binding.bucket,
        "backend": s.binding.backend,
        "per_source_ip_rps": s.binding.per_source_ip_rps,
        "created_at": time_str(s.created_at),
    })
}

/// Runs one anonymous command against `store` at time `now`. `backends`:
/// the backends the configuration names; a binding to another one is
/// refused (with none configured, nothing can be checked: a warning).
pub fn run_anonymous(
    cmd: AnonymousCommand,
    store: &Store,
    backends: &BTreeSet<String>,
    now: UnixSeconds,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match cmd {
        AnonymousCommand::Add(a) => {
            if backends.is_empty() {
                tracing::warn!(backend = %a.backend,
                    "no backends configured (--config): the backend name is not checked");
            } else if !backends.contains(&a.backend) {
                let known: Vec<&str> = backends.iter().map(String::as_str).collect();
                bail!(
                    "backend '{}' is not configured (configured: {})",
                    a.backend,
                    known.join(", ")
                );
            }
            let b = AnonymousBinding {
                bucket: a.bucket,
                backend: a.backend,
                per_source_ip_rps: a.per_source_ip_rps,
            };
            store.add_anonymous(&b, now)?;
            let rate = match b.per_source_ip_rps {
                0 => "the proxy default rate".to_owned(),
                n => format!("{n} requests per second"),
            };
            writeln!(
                out,
                "bucket {} is readable anonymously through backend {} ({rate} per client address)",
                b.bucket, b.backend
            )?;
        }
        AnonymousCommand::Remove { bucket } => {
            store.remove_anonymous(&bucket)?;
            writeln!(out, "removed the anonymous binding of bucket {bucket}")?;
        }
        AnonymousCommand::List { json } => {
            let all = store.list_anonymous()?;
            if json {
                let v: Vec<_> = all.iter().map(describe_anonymous).collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                writeln!(
                    out,
                    "{:<32} {:<16} {:<12} CREATED",
                    "BUCKET", "BACKEND", "RPS PER IP"
                )?;
                for s in &all {
                    writeln!(
                        out,
                        "{:<32} {:<16} {:<12} {}",
                        s.binding.bucket,
                        s.binding.backend,
                        rps_str(s.binding.per_source_ip_rps),
                        time_str(s.created_at)
                    )?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_parsers() {
        assert_eq!(
            parse_scope("main:alpha").unwrap(),
            Scope::new("main", "alpha")
        );
        assert!(parse_scope("alpha").is_err());
        assert!(parse_scope(":alpha").is_err());
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("90m").unwrap(), 5400);
        assert_eq!(parse_duration("2h").unwrap(), 7200);
        assert_eq!(parse_duration("30d").unwrap(), 2_592_000);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
        assert_eq!(parse_bytes("10Gi").unwrap(), 10 << 30);
        assert_eq!(parse_bytes("500M").unwrap(), 500_000_000);
        assert_eq!(parse_bytes("123").unwrap(), 123);
        assert!(parse_bytes("1.5G").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }

    #[test]
    fn create_count_makes_that_many_keys_in_one_go() {
        use clap::Parser;
        let dir = std::env::temp_dir().join(format!("bg-cli-count-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("c.db");
        let _ = std::fs::remove_file(&db);
        let sealer = crate::store::seal::Sealer::from_key_string(
            "cli test store key: at least thirty-two characters",
            crate::store::seal::KeyOrigin::Given,
        )
        .unwrap();
        let mut store = Store::open(&db, sealer).unwrap();
        let cmd = |args: &[&str]| match Cli::try_parse_from(
            ["bucketgate-authz", "creds"].iter().chain(args),
        )
        .map(|c| c.command)
        {
            Ok(Command::Creds(c)) => c,
            other => panic!("{other:?}"),
        };
        let mut out = Vec::new();
        run_creds(
            cmd(&["create", "--bucket", "b:x", "--count", "50", "--json"]),
            &mut store,
            1_700_000_000,
            &mut out,
        )
        .unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 50);
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 50);
        for l in &lines {
            let id = l["access_key_id"].as_str().unwrap();
            let stored = store.get(id).unwrap().unwrap();
            assert_eq!(
                stored.credential.secret.expose(),
                l["secret_access_key"].as_str().unwrap()
            );
        }
        // One named key cannot be made twice over.
        let err = run_creds(
            cmd(&[
                "create",
                "--bucket",
                "b:x",
                "--count",
                "2",
                "--access-key-id",
                "AKIA0000000000000001",
            ]),
            &mut store,
            1_700_000_000,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("--count"), "{err}");
        assert!(
            Cli::try_parse_from([
                "bucketgate-authz",
                "creds",
                "create",
                "--bucket",
                "b:x",
                "--count",
                "0"
            ])
            .is_err()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn anonymous_add_refuses_an_unknown_backend() {
        use clap::Parser;
        let dir = std::env::temp_dir().join(format!("bg-cli-anon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("a.db");
        let _ = std::fs::remove_file(&db);
        let sealer = crate::store::seal::Sealer::from_key_string(
            "cli test store key: at least thirty-two characters",
            crate::store::seal::KeyOrigin::Given,
        )
        .unwrap();
        let store = Store::open(&db, sealer).unwrap();
        let cmd = |args: &[&str]| match Cli::try_parse_from(
            ["bucketgate-authz", "anonymous"].iter().chain(args),
        )
        .map(|c| c.command)
        {
            Ok(Command::Anonymous(c)) => c,
            other => panic!("{other:?}"),
        };
        let backends: BTreeSet<String> = ["main".to_owned()].into();
        let err = run_anonymous(
            cmd(&["add", "--bucket", "public", "--backend", "mian"]),
            &store,
            &backends,
            1_700_000_000,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "backend 'mian' is not configured (configured: main)"
        );
        assert!(store.list_anonymous().unwrap().is_empty());
        let mut out = Vec::new();
        run_anonymous(
            cmd(&[
                "add",
                "--bucket",
                "public",
                "--backend",
                "main",
                "--per-source-ip-rps",
                "3",
            ]),
            &store,
            &backends,
            1_700_000_000,
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "bucket public is readable anonymously through backend main \
             (3 requests per second per client address)\n"
        );
        let stored = store.list_anonymous().unwrap();
        assert_eq!(
            (stored[0].binding.per_source_ip_rps, stored[0].created_at),
            (3, 1_700_000_000)
        );
        // The rate is a number of requests.
        assert!(
            Cli::try_parse_from([
                "bucketgate-authz",
                "anonymous",
                "add",
                "--bucket",
                "b",
                "--backend",
                "main",
                "--per-source-ip-rps",
                "-1",
            ])
            .is_err()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
