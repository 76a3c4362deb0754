//! The admin CLI, run as a user would: `bucketgate-authz creds …` and
//! `bucketgate-authz anonymous …` against a store in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn run(db: &Path, env_key: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bucketgate-authz"));
    cmd.arg("--database").arg(db).args(args);
    cmd.env_remove("STOWAGE_SECRET_KEY")
        .env_remove("BUCKETGATE_CONFIG")
        .env_remove("RUST_LOG");
    if let Some(k) = env_key {
        cmd.env("STOWAGE_SECRET_KEY", k);
    }
    cmd.output().unwrap()
}

fn ok(db: &Path, args: &[&str]) -> String {
    let out = run(db, None, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(db: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(db, args)).unwrap()
}

#[test]
fn create_list_show_disable_rotate_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("creds.db");

    let created = json(
        &db,
        &[
            "creds",
            "create",
            "--bucket",
            "main:alpha",
            "--bucket",
            "archive:beta",
            "--rps",
            "5",
            "--expires-in",
            "2h",
            "--quota",
            "10Gi",
            "--description",
            "ci",
            "--json",
        ],
    );
    let id = created["access_key_id"].as_str().unwrap().to_owned();
    let secret = created["secret_access_key"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 40);
    assert_eq!(
        created["scopes"],
        serde_json::json!([{"bucket": "alpha", "backend": "main"}, {"bucket": "beta", "backend": "archive"}])
    );
    // The key file was generated next to the store, mode 0600.
    use std::os::unix::fs::PermissionsExt;
    let key_file = dir.path().join("creds.db.key");
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The secret is never shown again.
    let listed = ok(&db, &["creds", "list"]);
    assert!(
        listed.contains(&id) && listed.contains("main:alpha,archive:beta"),
        "{listed}"
    );
    assert!(!listed.contains(&secret));
    let shown = json(&db, &["creds", "show", &id, "--json"]);
    assert!(!shown.to_string().contains(&secret));
    assert_eq!(shown["rps"], 5);
    assert_eq!(shown["quota_hard_bytes"], 10u64 << 30);
    assert_eq!(shown["state"], "active");
    assert_eq!(shown["description"], "ci");
    assert!(shown["expires_at"].as_str().unwrap().ends_with('Z'));
    let text = ok(&db, &["creds", "show", &id]);
    assert!(
        text.contains("archive:beta") && !text.contains(&secret),
        "{text}"
    );

    ok(&db, &["creds", "disable", &id]);
    assert_eq!(
        json(&db, &["creds", "show", &id, "--json"])["state"],
        "disabled"
    );
    ok(&db, &["creds", "enable", &id]);
    assert_eq!(
        json(&db, &["creds", "show", &id, "--json"])["state"],
        "active"
    );

    let rotated = json(&db, &["creds", "rotate", &id, "--overlap", "0", "--json"]);
    let new_id = rotated["access_key_id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
    assert_ne!(rotated["secret_access_key"].as_str().unwrap(), secret);
    assert_eq!(rotated["scopes"], created["scopes"]);
    assert_eq!(
        json(&db, &["creds", "show", &id, "--json"])["state"],
        "expired"
    );
    assert_eq!(json(&db, &["creds", "show", &new_id, "--json"])["rps"], 5);

    ok(&db, &["creds", "revoke", &id]);
    let all = json(&db, &["creds", "list", "--json"]);
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["access_key_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [new_id.as_str()]);

    // Errors are clear and exit non-zero.
    let out = run(&db, None, &["creds", "revoke", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credential with access key"));
    let out = run(&db, None, &["creds", "create", "--bucket", "nocolon"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("backend:bucket"));
    let out = run(&db, None, &["creds", "create"]);
    assert!(!out.status.success(), "--bucket is required");
}

#[test]
fn human_output_and_explicit_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("creds.db");
    let out = ok(
        &db,
        &[
            "creds",
            "create",
            "--bucket",
            "main:alpha",
            "--access-key-id",
            "AKIAEXPLICIT00000001",
        ],
    );
    assert!(
        out.contains("access_key_id:     AKIAEXPLICIT00000001"),
        "{out}"
    );
    assert!(
        out.contains("secret_access_key: ") && out.contains("shown only now"),
        "{out}"
    );
    let dup = run(
        &db,
        None,
        &[
            "creds",
            "create",
            "--bucket",
            "main:alpha",
            "--access-key-id",
            "AKIAEXPLICIT00000001",
        ],
    );
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
}

#[test]
fn wrong_key_from_the_environment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("creds.db");
    let good = "a-long-enough-passphrase-for-the-store-key";
    let out = run(
        &db,
        Some(good),
        &["creds", "create", "--bucket", "main:alpha"],
    );
    assert!(out.status.success());
    assert!(
        !dir.path().join("creds.db.key").exists(),
        "the env key needs no file"
    );
    let out = run(
        &db,
        Some("another-long-enough-passphrase-for-this"),
        &["creds", "list"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sealed under another key"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "nothing is printed from a store that does not open"
    );
    let out = run(&db, Some("short"), &["creds", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32"));
}

#[test]
fn anonymous_add_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("creds.db");
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        br#"{"backends": [{"name": "main", "credentials": {"source": "env"}},
                          {"name": "archive", "credentials": {"source": "env"}}]}"#,
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let cfg = |args: &[&'static str]| -> Vec<&str> {
        let mut all = vec!["--config", config];
        all.extend_from_slice(args);
        all
    };

    let out = ok(
        &db,
        &cfg(&[
            "anonymous",
            "add",
            "--bucket",
            "public-assets",
            "--backend",
            "main",
        ]),
    );
    assert_eq!(
        out.trim(),
        "bucket public-assets is readable anonymously through backend main \
         (the proxy default rate per client address)"
    );
    let out = ok(
        &db,
        &cfg(&[
            "anonymous",
            "add",
            "--bucket",
            "docs",
            "--backend",
            "archive",
            "--per-source-ip-rps",
            "50",
        ]),
    );
    assert!(out.contains("50 requests per second"), "{out}");

    // A backend the config does not name is refused, and nothing is stored.
    let out = run(
        &db,
        None,
        &cfg(&["anonymous", "add", "--bucket", "other", "--backend", "nope"]),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("backend 'nope' is not configured (configured: archive, main)"),
        "{err}"
    );
    // A bucket is bound once.
    let out = run(
        &db,
        None,
        &cfg(&["anonymous", "add", "--bucket", "docs", "--backend", "main"]),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("already has an anonymous binding"));

    let table = ok(&db, &["anonymous", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("BUCKET"), "{table}");
    assert!(
        lines[1].starts_with("docs") && lines[1].contains("archive") && lines[1].contains("50"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("public-assets") && lines[2].contains("default"),
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    let listed = json(&db, &["anonymous", "list", "--json"]);
    assert_eq!(listed[0]["bucket"], "docs");
    assert_eq!(listed[0]["backend"], "archive");
    assert_eq!(listed[0]["per_source_ip_rps"], 50);
    assert!(listed[0]["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(listed[1]["per_source_ip_rps"], 0);

    assert_eq!(
        ok(&db, &["anonymous", "remove", "--bucket", "docs"]).trim(),
        "removed the anonymous binding of bucket docs"
    );
    let out = run(&db, None, &["anonymous", "remove", "--bucket", "docs"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no anonymous binding for bucket docs"));
    assert_eq!(
        json(&db, &["anonymous", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Without a config there is no backend list to check against: stored,
    // with a warning.
    let out = run(
        &db,
        None,
        &[
            "anonymous",
            "add",
            "--bucket",
            "unchecked",
            "--backend",
            "anything",
        ],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not checked"));
}
