//! The database file and its statements.
//!
//! It is one SQLite file (`ca.db`, [`peerlink_pki::layout::DB_FILE`]) in
//! rollback-journal mode with full synchronous commits, so it is a single
//! self-contained file that can be copied to gateway hosts and survives power
//! loss on the laptop.

use std::path::Path;
use std::str::FromStr;

use peerlink_pki::timefmt::{parse_rfc3339, rfc3339};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;

use crate::records::{Issued, Reason, RevokedEntry};

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("issuance database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// The error.
        #[source]
        source: sqlx::Error,
    },
    /// Migration failed.
    #[error("issuance database {path}: cannot apply schema: {source}")]
    Migrate {
        /// The database file.
        path: String,
        /// The error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// Stored data is not what this version expects.
    #[error("issuance database: corrupt row: {0}")]
    Corrupt(String),
}

/// A certificate row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertRecord {
    /// Serial, lowercase hex.
    pub serial_hex: String,
    /// root, peer or server.
    pub kind: String,
    /// Subject text.
    pub subject: String,
    /// For peer certificates, the partner.
    pub peer_node_id: Option<String>,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// RFC 3339.
    pub issued_at: String,
    /// valid or revoked.
    pub status: String,
    /// RFC 3339, when revoked.
    pub revoked_at: Option<String>,
    /// Reason name, when revoked.
    pub revocation_reason: Option<String>,
    /// DER (not serialized in listings).
    #[serde(skip)]
    pub der: Vec<u8>,
}

/// A partner row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerRecord {
    /// Partner node id.
    pub node_id: String,
    /// Partner root subject text.
    pub subject: String,
    /// Raw subject DER.
    #[serde(skip)]
    pub subject_der: Vec<u8>,
    /// Pinned root key.
    #[serde(skip)]
    pub spki_der: Vec<u8>,
    /// Root fingerprint, hex.
    pub root_fingerprint: String,
    /// Endpoints.
    pub endpoints: Vec<String>,
    /// active or revoked.
    pub status: String,
    /// RFC 3339.
    pub added_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Serial of the cross-cert they issued us, once registered.
    pub registered_cert_serial: Option<String>,
}

/// Spelled out once so that [`CaDb::execute`] can take any statement with its values
/// already bound.
type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// An open issuance database.
pub struct CaDb {
    conn: SqliteConnection,
    path: String,
}

impl CaDb {
    /// Opens (and with `create`, creates) the database and applies migrations.
    pub async fn open(path: &Path, create: bool) -> Result<CaDb, DbError> {
        let mut db = CaDb::connect(path, |options| {
            options
                .create_if_missing(create)
                .journal_mode(SqliteJournalMode::Delete)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
        })
        .await?;
        sqlx::migrate!("../../migrations/ca")
            .run(&mut db.conn)
            .await
            .map_err(|source| DbError::Migrate {
                path: db.path.clone(),
                source,
            })?;
        Ok(db)
    }

    /// Opens an existing database read-only, without migrating (gateways read a copy
    /// of the CA directory and must never write to it).
    pub async fn open_read_only(path: &Path) -> Result<CaDb, DbError> {
        CaDb::connect(path, |options| {
            options.read_only(true).create_if_missing(false)
        })
        .await
    }

    /// The writable and the read-only opening differ only in their options; both must
    /// name the file the operator gave in every error.
    async fn connect(
        path: &Path,
        options: impl FnOnce(SqliteConnectOptions) -> SqliteConnectOptions,
    ) -> Result<CaDb, DbError> {
        let display = path.display().to_string();
        let sq = |source| DbError::Sqlite {
            path: display.clone(),
            source,
        };
        let options = options(
            SqliteConnectOptions::from_str("sqlite://")
                .map_err(sq)?
                .filename(path),
        );
        let conn = SqliteConnection::connect_with(&options).await.map_err(sq)?;
        Ok(CaDb {
            conn,
            path: display,
        })
    }

    fn err(&self, source: sqlx::Error) -> DbError {
        DbError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Every statement's failure must name the database file; the statements whose
    /// result is only "done" all go through here.
    async fn execute(&mut self, query: Query<'_>) -> Result<(), DbError> {
        query
            .execute(&mut self.conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Like [`CaDb::execute`], for the whole-table reads that listings and lookups are
    /// built from; a row this version cannot decode fails the whole read.
    async fn fetch_all<T>(
        &mut self,
        sql: &str,
        from_row: fn(&SqliteRow) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        let rows = sqlx::query(sql)
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter().map(from_row).collect()
    }

    /// Starts a transaction; nothing is visible until [`CaDb::commit`].
    pub async fn begin(&mut self) -> Result<(), DbError> {
        self.execute(sqlx::query("BEGIN IMMEDIATE")).await
    }

    /// Commits the open transaction.
    pub async fn commit(&mut self) -> Result<(), DbError> {
        self.execute(sqlx::query("COMMIT")).await
    }

    /// Rolls back the open transaction (used when writing a file failed).
    pub async fn rollback(&mut self) {
        let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
    }

    /// Records an issued certificate.
    pub async fn insert_certificate(
        &mut self,
        kind: &str,
        issued: &Issued,
        peer_node_id: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), DbError> {
        self.execute(
            sqlx::query(
                "INSERT INTO certificates (serial_hex, kind, subject, peer_node_id, not_before, not_after, issued_at, der)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(hex::encode(&issued.serial))
            .bind(kind)
            .bind(&issued.subject)
            .bind(peer_node_id)
            .bind(rfc3339(issued.not_before))
            .bind(rfc3339(issued.not_after))
            .bind(rfc3339(now))
            .bind(&issued.der),
        )
        .await
    }

    /// All certificates, oldest first.
    pub async fn certificates(&mut self) -> Result<Vec<CertRecord>, DbError> {
        self.fetch_all(
            "SELECT * FROM certificates ORDER BY issued_at, serial_hex",
            cert_from_row,
        )
        .await
    }

    /// One certificate by serial (hex, case-insensitive, leading zeros ignored).
    pub async fn certificate(&mut self, serial_hex: &str) -> Result<Option<CertRecord>, DbError> {
        let wanted = normalize_serial(serial_hex);
        Ok(self
            .certificates()
            .await?
            .into_iter()
            .find(|c| normalize_serial(&c.serial_hex) == wanted))
    }

    /// Marks a certificate revoked.
    pub async fn revoke_certificate(
        &mut self,
        serial_hex: &str,
        at: OffsetDateTime,
        reason: Reason,
    ) -> Result<(), DbError> {
        self.execute(
            sqlx::query("UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ? WHERE serial_hex = ? AND status = 'valid'")
                .bind(rfc3339(at))
                .bind(reason.name())
                .bind(serial_hex),
        )
        .await
    }

    /// Revoked certificates for the CRL.
    pub async fn revoked(&mut self) -> Result<Vec<RevokedEntry>, DbError> {
        let mut out = Vec::new();
        for c in self.certificates().await? {
            if c.status != "revoked" {
                continue;
            }
            let serial = hex::decode(&c.serial_hex)
                .map_err(|_| DbError::Corrupt(format!("serial {}", c.serial_hex)))?;
            let revoked_at = c
                .revoked_at
                .as_deref()
                .and_then(|t| parse_rfc3339(t).ok())
                .ok_or_else(|| DbError::Corrupt(format!("revocation time of {}", c.serial_hex)))?;
            let reason = c.revocation_reason.as_deref().and_then(Reason::from_name);
            out.push(RevokedEntry {
                serial,
                revoked_at,
                reason,
            });
        }
        Ok(out)
    }

    /// Allocates the next CRL number (inside the caller's transaction).
    pub async fn next_crl_number(&mut self) -> Result<u64, DbError> {
        self.execute(sqlx::query(
            "UPDATE crl_state SET last_number = last_number + 1 WHERE id = 1",
        ))
        .await?;
        let row = sqlx::query("SELECT last_number FROM crl_state WHERE id = 1")
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| self.err(e))?;
        let n: i64 = row.try_get(0).map_err(|e| self.err(e))?;
        u64::try_from(n).map_err(|_| DbError::Corrupt("negative CRL number".into()))
    }

    /// Inserts or updates a partner (status back to active).
    pub async fn upsert_peer(&mut self, peer: &PeerRecord) -> Result<(), DbError> {
        let endpoints =
            serde_json::to_string(&peer.endpoints).map_err(|e| DbError::Corrupt(e.to_string()))?;
        self.execute(
            sqlx::query(
                "INSERT INTO peers (node_id, subject, subject_der, spki_der, root_fingerprint, endpoints, status, added_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?)
             ON CONFLICT (node_id) DO UPDATE SET subject = excluded.subject, subject_der = excluded.subject_der,
               root_fingerprint = excluded.root_fingerprint, endpoints = excluded.endpoints, status = 'active',
               updated_at = excluded.updated_at",
            )
            .bind(&peer.node_id)
            .bind(&peer.subject)
            .bind(&peer.subject_der)
            .bind(&peer.spki_der)
            .bind(&peer.root_fingerprint)
            .bind(endpoints)
            .bind(&peer.added_at)
            .bind(&peer.updated_at),
        )
        .await
    }

    /// Records the cross-cert a partner issued to us.
    pub async fn set_registered_cert(
        &mut self,
        node_id: &str,
        serial_hex: &str,
        now: OffsetDateTime,
    ) -> Result<(), DbError> {
        self.update_peer(
            "UPDATE peers SET registered_cert_serial = ?, updated_at = ? WHERE node_id = ?",
            node_id,
            serial_hex,
            now,
        )
        .await
    }

    /// Marks a partner revoked (its links must be refused).
    pub async fn set_peer_status(
        &mut self,
        node_id: &str,
        status: &str,
        now: OffsetDateTime,
    ) -> Result<(), DbError> {
        self.update_peer(
            "UPDATE peers SET status = ?, updated_at = ? WHERE node_id = ?",
            node_id,
            status,
            now,
        )
        .await
    }

    /// Changing one column of a partner always stamps `updated_at` too; `sql` is a
    /// fixed statement (never built from input) binding value, time and node id.
    async fn update_peer(
        &mut self,
        sql: &'static str,
        node_id: &str,
        value: &str,
        now: OffsetDateTime,
    ) -> Result<(), DbError> {
        self.execute(
            sqlx::query(sql)
                .bind(value)
                .bind(rfc3339(now))
                .bind(node_id),
        )
        .await
    }

    /// All partners.
    pub async fn peers(&mut self) -> Result<Vec<PeerRecord>, DbError> {
        self.fetch_all("SELECT * FROM peers ORDER BY node_id", peer_from_row)
            .await
    }

    /// One partner.
    pub async fn peer(&mut self, node_id: &str) -> Result<Option<PeerRecord>, DbError> {
        Ok(self
            .peers()
            .await?
            .into_iter()
            .find(|p| p.node_id == node_id))
    }

    /// Closes the connection cleanly.
    pub async fn close(self) -> Result<(), DbError> {
        let path = self.path.clone();
        self.conn
            .close()
            .await
            .map_err(|source| DbError::Sqlite { path, source })
    }
}

fn normalize_serial(s: &str) -> String {
    s.trim_start_matches("0x")
        .replace(':', "")
        .to_ascii_lowercase()
        .trim_start_matches('0')
        .to_string()
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>>(
    row: &'r sqlx::sqlite::SqliteRow,
    col: &str,
) -> Result<T, DbError> {
    row.try_get(col)
        .map_err(|e| DbError::Corrupt(format!("{col}: {e}")))
}

fn cert_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<CertRecord, DbError> {
    Ok(CertRecord {
        serial_hex: get(row, "serial_hex")?,
        kind: get(row, "kind")?,
        subject: get(row, "subject")?,
        peer_node_id: get(row, "peer_node_id")?,
        not_before: get(row, "not_before")?,
        not_after: get(row, "not_after")?,
        issued_at: get(row, "issued_at")?,
        status: get(row, "status")?,
        revoked_at: get(row, "revoked_at")?,
        revocation_reason: get(row, "revocation_reason")?,
        der: get(row, "der")?,
    })
}

fn peer_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<PeerRecord, DbError> {
    let endpoints: String = get(row, "endpoints")?;
    Ok(PeerRecord {
        node_id: get(row, "node_id")?,
        subject: get(row, "subject")?,
        subject_der: get(row, "subject_der")?,
        spki_der: get(row, "spki_der")?,
        root_fingerprint: get(row, "root_fingerprint")?,
        endpoints: serde_json::from_str(&endpoints)
            .map_err(|e| DbError::Corrupt(format!("endpoints: {e}")))?,
        status: get(row, "status")?,
        added_at: get(row, "added_at")?,
        updated_at: get(row, "updated_at")?,
        registered_cert_serial: get(row, "registered_cert_serial")?,
    })
}
