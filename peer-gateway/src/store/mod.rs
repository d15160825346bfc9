//! Durable message storage: SQLite (embedded, the default) or PostgreSQL.
//!
//! Both back ends run the same SQL (written with `?` placeholders, rewritten
//! to `$n` for PostgreSQL) inside transactions. The rules that make delivery
//! exactly-once live here:
//!
//! - the outbox assigns each message a per-peer sequence number in the same
//!   transaction that stores it; a message leaves the outbox only when the
//!   peer acknowledges that sequence number (cumulative acks);
//! - the inbox keeps, per (peer, peer's outbox epoch), the highest sequence
//!   number it stored; a resend at or below it is acknowledged and dropped, in
//!   the same transaction that stores new messages, so a crash at any point
//!   either keeps both or neither;
//! - idempotency keys (`Message-Id`) are remembered for [`SENT_ID_RETENTION`]
//!   after acceptance, so a client retrying a POST stores nothing new.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// Deduplication counters kept per peer (one per outbox epoch it announced).
const MAX_EPOCHS_PER_PEER: i64 = 8;

/// How long idempotency keys are remembered after a message was accepted.
pub const SENT_ID_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Schema migration failed.
    #[error("cannot apply the database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The disk (or the database's quota) is full.
    #[error("the message store is full (disk full); free space or raise the quota")]
    Full,
    /// The URL is not usable.
    #[error("database_url {0:?}: {1}")]
    Url(String, String),
    /// Another gateway process uses this SQLite store.
    #[error(transparent)]
    Locked(#[from] lock::LockError),
}

impl StoreError {
    fn from_db(e: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(db) = &e {
            // SQLITE_FULL is 13; PostgreSQL disk_full is 53100.
            if matches!(db.code().as_deref(), Some("13") | Some("53100")) {
                return StoreError::Full;
            }
        }
        if let sqlx::Error::Io(io) = &e {
            if io.raw_os_error() == Some(28) {
                return StoreError::Full;
            }
        }
        StoreError::Db(e)
    }

    /// Whether a retry later may succeed (full disk, busy database).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Full | StoreError::Db(sqlx::Error::PoolTimedOut)
        )
    }
}

/// A message an application asked us to send.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Destination peer.
    pub peer_id: String,
    /// Idempotency key / message id; generated when absent.
    pub message_id: Option<String>,
    /// Media type, kept end to end.
    pub content_type: String,
    /// Message type (Swaptacular's `type`), carried by swpt-stomp links.
    pub message_type: Option<String>,
    /// The bytes.
    pub body: Vec<u8>,
}

/// What became of a submitted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Stored under this id.
    Stored(String),
    /// A message with this id was already accepted; nothing new stored.
    Duplicate(String),
}

impl Accepted {
    /// The message id either way.
    pub fn id(&self) -> &str {
        match self {
            Accepted::Stored(id) | Accepted::Duplicate(id) => id,
        }
    }
}

/// A message on the wire (both directions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireMessage {
    /// Per-peer sequence number assigned by the sender's outbox.
    pub seq: i64,
    /// Message id.
    pub message_id: String,
    /// Media type.
    pub content_type: String,
    /// Message type, if any (swpt-stomp links carry it).
    pub message_type: Option<String>,
    /// The bytes.
    pub body: Vec<u8>,
}

/// A message that arrived without a sequence number (swpt-stomp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UntrackedMessage {
    /// Media type.
    pub content_type: String,
    /// Message type.
    pub message_type: String,
    /// The bytes.
    pub body: Vec<u8>,
}

/// A message waiting in our inbox.
#[derive(Debug, Clone)]
pub struct InboxMessage {
    /// Sender's node id.
    pub from_peer: String,
    /// Message id.
    pub message_id: String,
    /// Media type.
    pub content_type: String,
    /// Message type, if the partner gave one.
    pub message_type: Option<String>,
    /// The bytes.
    pub body: Vec<u8>,
    /// Unix milliseconds when it was stored.
    pub received_ms: i64,
}

/// Outbox figures of one peer.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OutboxStats {
    /// Messages not yet acknowledged by the peer.
    pub depth: i64,
    /// Their total size in bytes.
    pub bytes: i64,
    /// Age in milliseconds of the oldest one, if any.
    pub oldest_age_ms: Option<i64>,
}

/// Starting a write transaction: SQLite must take the write lock up front
/// (`BEGIN IMMEDIATE`), or a read that later writes fails with
/// `SQLITE_BUSY_SNAPSHOT` when another connection committed in between.
///
/// Every write transaction starts here, never with `pool.begin()`: sqlx 0.8
/// has a window inside `begin` (after `BEGIN` ran, before the `Transaction`
/// exists) where a caller that stops waiting (an HTTP client that hangs up, a
/// timeout) leaves the connection in the pool inside an open transaction that
/// nothing will end. On SQLite that connection holds the write lock for good
/// and every other write fails with "database is locked" (sqlx issues #3932 and
/// #4385). So `begin` runs in a task of its own that always completes; if the
/// caller is gone by then, the finished `Transaction` is dropped there and
/// rolls back as usual.
trait WritePool: Clone + Send + Sync + 'static {
    type Db: sqlx::Database;

    /// `BEGIN` (or `BEGIN IMMEDIATE`), run to completion whatever the caller does.
    fn begin_uncancellable(
        self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
           + Send
           + 'static;

    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
           + Send {
        let started = tokio::spawn(self.clone().begin_uncancellable());
        async move {
            started.await.map_err(|e| {
                sqlx::Error::Io(std::io::Error::other(format!(
                    "the task starting a transaction failed: {e}"
                )))
            })?
        }
    }
}

impl WritePool for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_uncancellable(
        self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl WritePool for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_uncancellable(
        self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The gateway's message store.
pub struct Store {
    backend: Backend,
    /// SQLite only: this process's exclusive hold on the store, until `close`.
    lock: std::sync::Mutex<Option<lock::StoreLock>>,
    /// Duration of write transactions (including the fsync), for /metrics.
    commit_latency: prometheus_client::metrics::histogram::Histogram,
}

/// Runs `$body` with `$pool` bound to the back end's pool and `$q` to a function
/// turning `?`-placeholder SQL into the back end's dialect.
macro_rules! on_pool {
    ($store:expr, |$pool:ident, $q:ident| $body:expr) => {
        match &$store.backend {
            Backend::Sqlite($pool) => {
                #[allow(unused_variables)]
                let $q = |s: &'static str| ::std::borrow::Cow::Borrowed(s);
                $body
            }
            Backend::Postgres($pool) => {
                #[allow(unused_variables)]
                let $q = |s: &'static str| {
                    ::std::borrow::Cow::<'static, str>::Owned($crate::store::to_postgres(s))
                };
                $body
            }
        }
    };
}

// After `on_pool!`, which they use.
pub mod committer;
mod epochs;
mod inbox;
mod leases_table;
pub mod lock;
mod outbox;
#[cfg(test)]
mod tests;

/// Rewrites `?` placeholders as `$1, $2, ...`.
pub(crate) fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn random_id() -> String {
    use rand_core::RngCore;
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Store {
    /// Opens the database at `url` (`sqlite://PATH` or `postgres://...`), applying migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let latency =
            prometheus_client::metrics::histogram::Histogram::new(crate::metrics::COMMIT_BUCKETS);
        Store::open_observed(url, latency).await
    }

    /// Opens the database as [`Store::open`] does, recording the duration of every
    /// write transaction in `commit_latency` (the gateway's metric).
    pub async fn open_observed(
        url: &str,
        commit_latency: prometheus_client::metrics::histogram::Histogram,
    ) -> Result<Store, StoreError> {
        let bad = |m: String| StoreError::Url(url.to_string(), m);
        let mut lock = None;
        let backend = if let Some(path) = url.strip_prefix("sqlite://") {
            lock = Some(lock::StoreLock::acquire(path.as_ref())?);
            let options = SqliteConnectOptions::from_str("sqlite://")
                .map_err(|e| bad(e.to_string()))?
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await
                .map_err(StoreError::from_db)?;
            sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
            Backend::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(|e| bad(e.to_string()))?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(StoreError::from_db)?;
            sqlx::migrate!("../migrations/postgres").run(&pool).await?;
            Backend::Postgres(pool)
        } else {
            return Err(bad("use sqlite://PATH or postgres://USER@HOST/DB".into()));
        };
        let store = Store {
            backend,
            lock: std::sync::Mutex::new(lock),
            commit_latency,
        };
        store.ensure_epoch().await?;
        Ok(store)
    }

    /// Whether several gateway replicas can share this store (PostgreSQL), so that
    /// link ownership needs leases. A SQLite store is locked to one process.
    pub fn shared_by_replicas(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Which back end, for status output.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Closes the pool and lets another process open the store.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(p) => p.close().await,
            Backend::Postgres(p) => p.close().await,
        }
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Test databases: a temporary SQLite file, and a fresh PostgreSQL database on the
/// server named by `PEERLINK_TEST_PG` (default: the local test server). When the
/// server is unreachable the PostgreSQL half is skipped, except in CI (`CI=true`),
/// where that is a failure.
#[cfg(test)]
pub mod testdb {
    use std::str::FromStr;

    use sqlx::Connection;

    /// The admin URL of the test server.
    pub fn admin_url() -> String {
        std::env::var("PEERLINK_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// Creates a uniquely named database and returns its URL, or None when skipping.
    pub async fn fresh_postgres() -> Option<String> {
        let admin = admin_url();
        let options = match sqlx::postgres::PgConnectOptions::from_str(&admin) {
            Ok(o) => o,
            Err(e) => panic!("PEERLINK_TEST_PG {admin:?}: {e}"),
        };
        let mut conn = match sqlx::PgConnection::connect_with(&options).await {
            Ok(c) => c,
            Err(e) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("PostgreSQL is required in CI but unreachable at {admin}: {e}");
                }
                eprintln!("skipping the PostgreSQL half: {admin} unreachable ({e})");
                return None;
            }
        };
        let name = format!("peerlink_test_{}", super::random_id());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(b, _)| b)
            .to_string();
        Some(format!("{base}/{name}"))
    }
}
