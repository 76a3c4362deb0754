//! The embedded credential store: one SQLite file (rusqlite, bundled
//! SQLite), schema migrations by `PRAGMA user_version`, secrets and scopes
//! sealed with AES-256-GCM ([`seal`]). It also holds anonymous (ReadOnly)
//! bucket bindings, in clear: they carry no secret, and what they grant is
//! public by design.
//!
//! The service reads the store by polling `PRAGMA data_version`, which
//! changes whenever another connection (the admin CLI) commits, and reloads
//! everything then; the admin CLI writes through the same type. A wrong key
//! is refused when the store opens (a sealed check value in `meta` does not
//! open), and any row that does not open fails the whole load: the service
//! keeps its last good snapshot instead of serving garbage.

pub mod seal;
pub mod sync;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bucketgate_core::credential::{AnonymousBinding, Credential, Scope};
use bucketgate_core::date::UnixSeconds;
use rusqlite::{Connection, OptionalExtension, params};

use self::seal::Sealer;

/// Errors of the store. Messages say what to do; none contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store key: {0}")]
    BadKey(String),
    #[error("store key file {0}: {1}")]
    KeyFile(PathBuf, #[source] std::io::Error),
    #[error(
        "the credential store {path} was sealed under another key than the {origin}; \
         set STOWAGE_SECRET_KEY (or the key file) to the key it was created with"
    )]
    WrongKey { path: PathBuf, origin: String },
    #[error("sealing failed")]
    Sealing,
    #[error("a sealed value does not open under the store key")]
    Unseal,
    #[error("credential {access_key_id}: stored {what} is unreadable")]
    Corrupt {
        access_key_id: String,
        what: &'static str,
    },
    #[error(
        "the store has schema version {found}, newer than this binary knows ({known}); upgrade bucketgate-authz"
    )]
    NewerSchema { found: i64, known: i64 },
    #[error("access key {0} already exists")]
    Exists(String),
    #[error("no credential with access key {0}")]
    NotFound(String),
    #[error("invalid credential: {0}")]
    Invalid(String),
    #[error("bucket {0} already has an anonymous binding")]
    AnonymousExists(String),
    #[error("no anonymous binding for bucket {0}")]
    AnonymousNotFound(String),
    #[error("invalid anonymous binding: {0}")]
    InvalidAnonymous(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Schema migrations, applied in order; `PRAGMA user_version` is the number
/// applied. Never edit a released step: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: credentials and the key check.
    "CREATE TABLE meta (
         name  TEXT PRIMARY KEY,
         value BLOB NOT NULL
     );
     CREATE TABLE credentials (
         access_key_id    TEXT PRIMARY KEY,
         sealed_secret    BLOB NOT NULL,
         sealed_scopes    BLOB NOT NULL,
         disabled         INTEGER NOT NULL DEFAULT 0,
         expires_at       INTEGER,
         rps              INTEGER,
         quota_soft_bytes INTEGER,
         quota_hard_bytes INTEGER,
         created_at       INTEGER NOT NULL,
         updated_at       INTEGER NOT NULL
     );",
    // 2: a free-form note per credential (who it is for).
    "ALTER TABLE credentials ADD COLUMN description TEXT;",
    // 3: anonymous (ReadOnly) bindings, at most one per bucket.
    "CREATE TABLE anonymous_bindings (
         bucket            TEXT PRIMARY KEY,
         backend           TEXT NOT NULL,
         per_source_ip_rps INTEGER NOT NULL DEFAULT 0,
         created_at        INTEGER NOT NULL
     );",
];

const KEY_CHECK: &[u8] = b"bucketgate credential store key check v1";

/// A credential with its bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCredential {
    pub credential: Credential,
    pub description: Option<String>,
    pub created_at: UnixSeconds,
    pub updated_at: UnixSeconds,
}

/// An anonymous binding with its bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAnonymousBinding {
    pub binding: AnonymousBinding,
    pub created_at: UnixSeconds,
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    sealer: Sealer,
    path: PathBuf,
}

fn aad(column: &str, access_key_id: &str) -> Vec<u8> {
    format!("bucketgate:credentials:{column}:{access_key_id}").into_bytes()
}

fn to_i64(v: Option<u64>) -> Option<i64> {
    v.map(|x| i64::try_from(x).unwrap_or(i64::MAX))
}

impl Store {
    /// Opens (or creates) the store at `path`, migrates it, and checks the key.
    pub fn open(path: &Path, sealer: Sealer) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL: the service reads while the CLI writes.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let mut store = Self {
            conn,
            sealer,
            path: path.to_owned(),
        };
        store.migrate()?;
        store.check_key()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version this binary migrates to.
    pub fn latest_schema() -> i64 {
        MIGRATIONS.len() as i64
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let known = Self::latest_schema();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > known {
            return Err(StoreError::NewerSchema { found, known });
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(step)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tracing::info!(version = i + 1, "credential store migrated");
        }
        tx.commit()?;
        Ok(())
    }

    fn check_key(&self) -> Result<(), StoreError> {
        let sealed: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM meta WHERE name = 'key_check'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match sealed {
            Some(s) => match self.sealer.open(&s, b"bucketgate:meta:key_check") {
                Ok(v) if v.as_slice() == KEY_CHECK => Ok(()),
                _ => Err(StoreError::WrongKey {
                    path: self.path.clone(),
                    origin: self.sealer.origin.to_string(),
                }),
            },
            None => {
                let s = self.sealer.seal(KEY_CHECK, b"bucketgate:meta:key_check")?;
                self.conn.execute(
                    "INSERT OR IGNORE INTO meta (name, value) VALUES ('key_check', ?1)",
                    params![s],
                )?;
                // Another process may have won the race: check what is there.
                let again: Vec<u8> = self.conn.query_row(
                    "SELECT value FROM meta WHERE name = 'key_check'",
                    [],
                    |r| r.get(0),
                )?;
                match self.sealer.open(&again, b"bucketgate:meta:key_check") {
                    Ok(v) if v.as_slice() == KEY_CHECK => Ok(()),
                    _ => Err(StoreError::WrongKey {
                        path: self.path.clone(),
                        origin: self.sealer.origin.to_string(),
                    }),
                }
            }
        }
    }

    /// Changes whenever another connection commits (cheap to poll).
    pub fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "data_version", |r| r.get(0))?)
    }

    /// Inserts a new credential.
    pub fn insert(
        &self,
        c: &Credential,
        description: Option<&str>,
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        if c.access_key_id.is_empty() || c.secret.is_empty() {
            return Err(StoreError::Invalid(
                "access key id and secret are required".into(),
            ));
        }
        if c.scopes.is_empty() {
            return Err(StoreError::Invalid("at least one scope is required".into()));
        }
        let id = &c.access_key_id;
        let secret = self
            .sealer
            .seal(c.secret.expose().as_bytes(), &aad("secret", id))?;
        let scopes_json =
            serde_json::to_vec(&c.scopes).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let scopes = self.sealer.seal(&scopes_json, &aad("scopes", id))?;
        let res = self.conn.execute(
            "INSERT INTO credentials (access_key_id, sealed_secret, sealed_scopes, disabled,
                 expires_at, rps, quota_soft_bytes, quota_hard_bytes, created_at, updated_at,
                 description)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
            params![
                id,
                secret,
                scopes,
                c.disabled,
                c.expires_at,
                c.rps,
                to_i64(c.quota_soft_bytes),
                to_i64(c.quota_hard_bytes),
                now,
                description,
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Exists(id.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Inserts several credentials in one transaction: all or none.
    pub fn insert_all(
        &self,
        creds: &[Credential],
        description: Option<&str>,
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        for c in creds {
            self.insert(c, description, now)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn row(&self, r: &rusqlite::Row<'_>) -> Result<StoredCredential, StoreError> {
        let id: String = r.get(0)?;
        let corrupt = |what| StoreError::Corrupt {
            access_key_id: id.clone(),
            what,
        };
        let sealed_secret: Vec<u8> = r.get(1)?;
        let sealed_scopes: Vec<u8> = r.get(2)?;
        let secret = self.sealer.open(&sealed_secret, &aad("secret", &id))?;
        let secret = String::from_utf8(secret.to_vec()).map_err(|_| corrupt("secret"))?;
        let scopes = self.sealer.open(&sealed_scopes, &aad("scopes", &id))?;
        let scopes: Vec<Scope> = serde_json::from_slice(&scopes).map_err(|_| corrupt("scopes"))?;
        let mut c = Credential::new(id.clone(), secret, scopes);
        c.disabled = r.get(3)?;
        c.expires_at = r.get(4)?;
        c.rps = r.get(5)?;
        let soft: Option<i64> = r.get(6)?;
        let hard: Option<i64> = r.get(7)?;
        c.quota_soft_bytes = soft
            .map(|v| u64::try_from(v).map_err(|_| corrupt("quota")))
            .transpose()?;
        c.quota_hard_bytes = hard
            .map(|v| u64::try_from(v).map_err(|_| corrupt("quota")))
            .transpose()?;
        Ok(StoredCredential {
            credential: c,
            created_at: r.get(8)?,
            updated_at: r.get(9)?,
            description: r.get(10)?,
        })
    }

    const COLUMNS: &'static str = "access_key_id, sealed_secret, sealed_scopes, disabled, \
        expires_at, rps, quota_soft_bytes, quota_hard_bytes, created_at, updated_at, description";

    /// Every credential, by access key id. Fails as a whole when any row
    /// does not open.
    pub fn list(&self) -> Result<Vec<StoredCredential>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {} FROM credentials ORDER BY access_key_id",
            Self::COLUMNS
        ))?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(self.row(r)?);
        }
        Ok(out)
    }

    pub fn get(&self, access_key_id: &str) -> Result<Option<StoredCredential>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {} FROM credentials WHERE access_key_id = ?1",
            Self::COLUMNS
        ))?;
        let mut rows = stmt.query(params![access_key_id])?;
        match rows.next()? {
            Some(r) => Ok(Some(self.row(r)?)),
            None => Ok(None),
        }
    }

    /// Deletes a credential (revocation). Errors when it does not exist.
    pub fn delete(&self, access_key_id: &str) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "DELETE FROM credentials WHERE access_key_id = ?1",
            params![access_key_id],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(access_key_id.to_owned()));
        }
        Ok(())
    }

    pub fn set_disabled(
        &self,
        access_key_id: &str,
        disabled: bool,
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        self.update_one(
            "UPDATE credentials SET disabled = ?2, updated_at = ?3 WHERE access_key_id = ?1",
            access_key_id,
            disabled,
            now,
        )
    }

    pub fn set_expires_at(
        &self,
        access_key_id: &str,
        expires_at: Option<UnixSeconds>,
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        self.update_one(
            "UPDATE credentials SET expires_at = ?2, updated_at = ?3 WHERE access_key_id = ?1",
            access_key_id,
            expires_at,
            now,
        )
    }

    /// Runs `sql` (parameters: key id, `value`, `now`) on one credential;
    /// NotFound when no row has that key id.
    fn update_one(
        &self,
        sql: &str,
        access_key_id: &str,
        value: impl rusqlite::ToSql,
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        let n = self.conn.execute(sql, params![access_key_id, value, now])?;
        if n == 0 {
            return Err(StoreError::NotFound(access_key_id.to_owned()));
        }
        Ok(())
    }

    /// Binds `b.bucket` for anonymous reads. Errors when the bucket already
    /// has a binding (remove it first) or the binding is malformed.
    pub fn add_anonymous(&self, b: &AnonymousBinding, now: UnixSeconds) -> Result<(), StoreError> {
        if !bucketgate_core::request::valid_bucket_name(&b.bucket) {
            return Err(StoreError::InvalidAnonymous(format!(
                "{:?} is not a bucket name (3 to 63 of a-z 0-9 . -, starting and ending \
                 with a letter or digit)",
                b.bucket
            )));
        }
        if b.backend.trim().is_empty() || b.backend.trim() != b.backend {
            return Err(StoreError::InvalidAnonymous(format!(
                "{:?} is not a backend name",
                b.backend
            )));
        }
        let res = self.conn.execute(
            "INSERT INTO anonymous_bindings (bucket, backend, per_source_ip_rps, created_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![b.bucket, b.backend, b.per_source_ip_rps, now],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::AnonymousExists(b.bucket.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the binding of `bucket`: its anonymous reads are refused
    /// from the next load on. Errors when it has none.
    pub fn remove_anonymous(&self, bucket: &str) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "DELETE FROM anonymous_bindings WHERE bucket = ?1",
            params![bucket],
        )?;
        if n == 0 {
            return Err(StoreError::AnonymousNotFound(bucket.to_owned()));
        }
        Ok(())
    }

    /// Every anonymous binding, by bucket.
    pub fn list_anonymous(&self) -> Result<Vec<StoredAnonymousBinding>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT bucket, backend, per_source_ip_rps, created_at
             FROM anonymous_bindings ORDER BY bucket",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredAnonymousBinding {
                binding: AnonymousBinding {
                    bucket: r.get(0)?,
                    backend: r.get(1)?,
                    per_source_ip_rps: r.get(2)?,
                },
                created_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rotation: a new credential with the same scopes and limits, inserted
    /// in the same transaction that makes the old one expire at
    /// `old_expires_at` (never later than it already did).
    pub fn rotate(
        &mut self,
        old_access_key_id: &str,
        new_access_key_id: &str,
        new_secret: &str,
        old_expires_at: UnixSeconds,
        now: UnixSeconds,
    ) -> Result<Credential, StoreError> {
        let old = self
            .get(old_access_key_id)?
            .ok_or_else(|| StoreError::NotFound(old_access_key_id.to_owned()))?;
        let mut new = old.credential.clone();
        new.access_key_id = new_access_key_id.to_owned();
        new.secret = new_secret.into();
        let expiry = match old.credential.expires_at {
            Some(t) if t < old_expires_at => t,
            _ => old_expires_at,
        };
        let tx = self.conn.transaction()?;
        // `insert`/`set_expires_at` borrow self; run the statements on the tx.
        {
            let id = &new.access_key_id;
            let secret = self
                .sealer
                .seal(new.secret.expose().as_bytes(), &aad("secret", id))?;
            let scopes_json =
                serde_json::to_vec(&new.scopes).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let scopes = self.sealer.seal(&scopes_json, &aad("scopes", id))?;
            let res = tx.execute(
                "INSERT INTO credentials (access_key_id, sealed_secret, sealed_scopes, disabled,
                     expires_at, rps, quota_soft_bytes, quota_hard_bytes, created_at, updated_at,
                     description)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
                params![
                    id,
                    secret,
                    scopes,
                    new.disabled,
                    new.expires_at,
                    new.rps,
                    to_i64(new.quota_soft_bytes),
                    to_i64(new.quota_hard_bytes),
                    now,
                    old.description,
                ],
            );
            if let Err(rusqlite::Error::SqliteFailure(e, _)) = &res
                && e.code == rusqlite::ErrorCode::ConstraintViolation
            {
                return Err(StoreError::Exists(id.clone()));
            }
            res?;
            tx.execute(
                "UPDATE credentials SET expires_at = ?2, updated_at = ?3 WHERE access_key_id = ?1",
                params![old_access_key_id, expiry, now],
            )?;
        }
        tx.commit()?;
        Ok(new)
    }
}

/// A new access key id: `BG` + 18 characters of A–Z2–7 (20 in all, like
/// AWS's; the prefix tells operators where a key comes from).
pub fn generate_access_key_id() -> Result<String, StoreError> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut raw = [0u8; 18];
    getrandom::fill(&mut raw).map_err(|e| StoreError::BadKey(format!("no randomness: {e}")))?;
    let mut id = String::from("BG");
    id.extend(
        raw.iter()
            .map(|b| char::from(ALPHABET[usize::from(b & 31)])),
    );
    Ok(id)
}

/// A new secret access key: 40 characters of base62 (about 238 bits).
pub fn generate_secret() -> Result<zeroize::Zeroizing<String>, StoreError> {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = zeroize::Zeroizing::new(String::with_capacity(40));
    while out.len() < 40 {
        let mut raw = zeroize::Zeroizing::new([0u8; 64]);
        getrandom::fill(raw.as_mut_slice())
            .map_err(|e| StoreError::BadKey(format!("no randomness: {e}")))?;
        // Rejection sampling keeps the distribution uniform.
        for b in raw.iter().filter(|b| **b < 248) {
            if out.len() == 40 {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(*b % 62)]));
        }
    }
    Ok(out)
}
