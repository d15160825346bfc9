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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};

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
    Locked(#[from] crate::store_lock::LockError),
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
    lock: std::sync::Mutex<Option<crate::store_lock::StoreLock>>,
    /// Duration of write transactions (including the fsync), for /metrics.
    pub commit_latency: crate::metrics::Histogram,
}

/// Runs `$body` with `$pool` bound to the back end's pool and `$q` to a function
/// turning `?`-placeholder SQL into the back end's dialect.
macro_rules! on_pool {
    ($store:expr, |$pool:ident, $q:ident| $body:expr) => {
        match &$store.backend {
            Backend::Sqlite($pool) => {
                #[allow(unused_variables)]
                let $q = |s: &'static str| Cow::Borrowed(s);
                $body
            }
            Backend::Postgres($pool) => {
                #[allow(unused_variables)]
                let $q = |s: &'static str| Cow::<'static, str>::Owned(to_postgres(s));
                $body
            }
        }
    };
}

/// Rewrites `?` placeholders as `$1, $2, ...`.
fn to_postgres(sql: &str) -> String {
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

fn random_id() -> String {
    use rand_core::RngCore;
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Store {
    /// Opens the database at `url` (`sqlite://PATH` or `postgres://...`), applying migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let bad = |m: String| StoreError::Url(url.to_string(), m);
        let mut lock = None;
        let backend = if let Some(path) = url.strip_prefix("sqlite://") {
            lock = Some(crate::store_lock::StoreLock::acquire(path.as_ref())?);
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
            commit_latency: crate::metrics::Histogram::default(),
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

    /// The current outbox epoch towards `peer` (sent in Hello): the store-wide one,
    /// unless a new one was started for that peer. Read from the database at each
    /// Hello, since a replica sharing the store may have started a new one.
    pub async fn current_epoch(&self, peer: &str) -> Result<String, StoreError> {
        on_pool!(self, |pool, q| {
            let row = sqlx::query(&q(
                "SELECT value FROM meta WHERE key IN (?, 'outbox_epoch') ORDER BY CASE WHEN key = 'outbox_epoch' THEN 1 ELSE 0 END LIMIT 1",
            ))
            .bind(format!("outbox_epoch:{peer}"))
            .fetch_one(pool)
            .await
            .map_err(StoreError::from_db)?;
            Ok(row.try_get::<String, _>(0)?)
        })
    }

    /// Starts a new outbox epoch towards `peer`, replacing `old` (no-op if another
    /// replica already did). Used when the peer has stored more of our messages than
    /// this store ever numbered for it: the store was restored from an older copy,
    /// and continuing the old numbering would make the peer drop new messages as
    /// resends. Scoped to that peer, so a misbehaving peer only affects itself.
    pub async fn rotate_epoch(&self, peer: &str, old: &str) -> Result<String, StoreError> {
        if self.current_epoch(peer).await? != old {
            return self.current_epoch(peer).await;
        }
        let new = random_id();
        on_pool!(self, |pool, q| {
            sqlx::query(&q(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            ))
            .bind(format!("outbox_epoch:{peer}"))
            .bind(&new)
            .execute(pool)
            .await
            .map_err(StoreError::from_db)?;
            Ok::<(), StoreError>(())
        })?;
        self.current_epoch(peer).await
    }

    async fn ensure_epoch(&self) -> Result<String, StoreError> {
        let candidate = random_id();
        on_pool!(self, |pool, q| {
            sqlx::query(&q("INSERT INTO meta (key, value) VALUES ('outbox_epoch', ?) ON CONFLICT (key) DO NOTHING"))
                .bind(&candidate)
                .execute(pool)
                .await
                .map_err(StoreError::from_db)?;
            let row = sqlx::query(&q("SELECT value FROM meta WHERE key = 'outbox_epoch'"))
                .fetch_one(pool)
                .await
                .map_err(StoreError::from_db)?;
            Ok(row.try_get::<String, _>(0)?)
        })
    }

    /// Stores a batch of messages atomically (all or none), assigning sequence numbers.
    pub async fn enqueue(&self, batch: &[NewMessage]) -> Result<Vec<Accepted>, StoreError> {
        let started = std::time::Instant::now();
        let mut result = self.enqueue_inner(batch).await;
        // Replicas sharing PostgreSQL may accept the same Message-Id at the same
        // moment: the loser's insert hits the unique key. Retrying sees the winner's
        // committed row and answers "duplicate", as for any other retry.
        for _ in 0..3 {
            match &result {
                Err(StoreError::Db(sqlx::Error::Database(db))) if db.is_unique_violation() => {
                    result = self.enqueue_inner(batch).await;
                }
                _ => break,
            }
        }
        self.commit_latency.observe(started.elapsed());
        result
    }

    async fn enqueue_inner(&self, batch: &[NewMessage]) -> Result<Vec<Accepted>, StoreError> {
        let now = now_ms();
        on_pool!(self, |pool, q| {
            let mut tx = pool.begin_write().await.map_err(StoreError::from_db)?;
            // 1. Which messages are new (not sent before, not earlier in this batch).
            let mut out: Vec<Accepted> = Vec::with_capacity(batch.len());
            for m in batch {
                let id = m.message_id.clone().unwrap_or_else(random_id);
                let known = sqlx::query(&q(
                    "SELECT seq FROM sent_ids WHERE peer_id = ? AND message_id = ?",
                ))
                .bind(&m.peer_id)
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from_db)?;
                let earlier_in_batch = m.message_id.is_some()
                    && batch
                        .iter()
                        .zip(&out)
                        .any(|(prev, a)| prev.peer_id == m.peer_id && a.id() == id);
                out.push(if known.is_some() || earlier_in_batch {
                    Accepted::Duplicate(id)
                } else {
                    Accepted::Stored(id)
                });
            }
            // 2. One block of sequence numbers per partner (two statements per
            //    partner instead of two per message), in batch order.
            let mut next_seq: BTreeMap<&str, i64> = BTreeMap::new();
            for (m, a) in batch.iter().zip(&out) {
                if matches!(a, Accepted::Stored(_)) {
                    *next_seq.entry(m.peer_id.as_str()).or_default() += 1;
                }
            }
            for (peer, count) in next_seq.iter_mut() {
                sqlx::query(&q("INSERT INTO outbox_state (peer_id, next_seq, acked_seq) VALUES (?, 1, 0) ON CONFLICT (peer_id) DO NOTHING"))
                    .bind(*peer)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_db)?;
                let row = sqlx::query(&q("UPDATE outbox_state SET next_seq = next_seq + ? WHERE peer_id = ? RETURNING next_seq - ?"))
                    .bind(*count)
                    .bind(*peer)
                    .bind(*count)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::from_db)?;
                *count = row.try_get(0)?; // now the first number of the block
            }
            // 3. The messages and their idempotency keys.
            for (m, a) in batch.iter().zip(&out) {
                let Accepted::Stored(id) = a else { continue };
                let Some(seq) = next_seq.get_mut(m.peer_id.as_str()) else {
                    continue; // counted above: unreachable
                };
                sqlx::query(&q("INSERT INTO outbox (peer_id, seq, message_id, content_type, body, created_ms) VALUES (?, ?, ?, ?, ?, ?)"))
                    .bind(&m.peer_id)
                    .bind(*seq)
                    .bind(id)
                    .bind(&m.content_type)
                    .bind(&m.body)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_db)?;
                sqlx::query(&q("INSERT INTO sent_ids (peer_id, message_id, seq, created_ms) VALUES (?, ?, ?, ?)"))
                    .bind(&m.peer_id)
                    .bind(id)
                    .bind(*seq)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_db)?;
                *seq += 1;
            }
            tx.commit().await.map_err(StoreError::from_db)?;
            Ok(out)
        })
    }

    /// Outbox messages of `peer` after `after_seq`, in order, at most `limit`.
    pub async fn outbox_after(
        &self,
        peer: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<WireMessage>, StoreError> {
        on_pool!(self, |pool, q| {
            let rows = sqlx::query(&q("SELECT seq, message_id, content_type, body FROM outbox WHERE peer_id = ? AND seq > ? ORDER BY seq LIMIT ?"))
                .bind(peer)
                .bind(after_seq)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(StoreError::from_db)?;
            rows.iter()
                .map(|r| {
                    Ok(WireMessage {
                        seq: r.try_get(0)?,
                        message_id: r.try_get(1)?,
                        content_type: r.try_get(2)?,
                        body: r.try_get(3)?,
                    })
                })
                .collect()
        })
    }

    /// The highest sequence number `peer` has acknowledged.
    pub async fn acked_seq(&self, peer: &str) -> Result<i64, StoreError> {
        on_pool!(self, |pool, q| {
            let row = sqlx::query(&q("SELECT acked_seq FROM outbox_state WHERE peer_id = ?"))
                .bind(peer)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::from_db)?;
            Ok(match row {
                Some(r) => r.try_get(0)?,
                None => 0,
            })
        })
    }

    /// Drops everything up to `upto_seq` from `peer`'s outbox: the peer has stored it.
    pub async fn ack_outbox(&self, peer: &str, upto_seq: i64) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let result = self.ack_outbox_inner(peer, upto_seq).await;
        self.commit_latency.observe(started.elapsed());
        result
    }

    async fn ack_outbox_inner(&self, peer: &str, upto_seq: i64) -> Result<(), StoreError> {
        on_pool!(self, |pool, q| {
            let mut tx = pool.begin_write().await.map_err(StoreError::from_db)?;
            sqlx::query(&q("DELETE FROM outbox WHERE peer_id = ? AND seq <= ?"))
                .bind(peer)
                .bind(upto_seq)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_db)?;
            sqlx::query(&q(
                "UPDATE outbox_state SET acked_seq = ? WHERE peer_id = ? AND acked_seq < ?",
            ))
            .bind(upto_seq)
            .bind(peer)
            .bind(upto_seq)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_db)?;
            tx.commit().await.map_err(StoreError::from_db)?;
            Ok(())
        })
    }

    /// Outbox figures for `peer`.
    pub async fn outbox_stats(&self, peer: &str) -> Result<OutboxStats, StoreError> {
        let now = now_ms();
        on_pool!(self, |pool, q| {
            let row = sqlx::query(&q("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0), MIN(created_ms) FROM outbox WHERE peer_id = ?"))
                .bind(peer)
                .fetch_one(pool)
                .await
                .map_err(StoreError::from_db)?;
            let oldest: Option<i64> = row.try_get(2)?;
            Ok(OutboxStats {
                depth: row.try_get(0)?,
                bytes: row.try_get::<i64, _>(1)?,
                oldest_age_ms: oldest.map(|t| (now - t).max(0)),
            })
        })
    }

    /// Outbox figures of every peer with undelivered messages, in one query.
    pub async fn outbox_stats_all(&self) -> Result<Vec<(String, OutboxStats)>, StoreError> {
        let now = now_ms();
        on_pool!(self, |pool, q| {
            let rows = sqlx::query(&q("SELECT peer_id, COUNT(*), COALESCE(SUM(LENGTH(body)), 0), MIN(created_ms) FROM outbox GROUP BY peer_id"))
                .fetch_all(pool)
                .await
                .map_err(StoreError::from_db)?;
            rows.iter()
                .map(|r| {
                    let oldest: Option<i64> = r.try_get(3)?;
                    Ok((
                        r.try_get(0)?,
                        OutboxStats {
                            depth: r.try_get(1)?,
                            bytes: r.try_get::<i64, _>(2)?,
                            oldest_age_ms: oldest.map(|t| (now - t).max(0)),
                        },
                    ))
                })
                .collect()
        })
    }

    /// Stores messages received from `peer` (outbox epoch `epoch`), skipping resends;
    /// returns the highest sequence number now stored, to acknowledge, and how many
    /// messages were new.
    pub async fn store_inbound(
        &self,
        peer: &str,
        epoch: &str,
        messages: &[WireMessage],
    ) -> Result<(i64, u64), StoreError> {
        let started = std::time::Instant::now();
        let result = self.store_inbound_inner(peer, epoch, messages).await;
        self.commit_latency.observe(started.elapsed());
        result
    }

    async fn store_inbound_inner(
        &self,
        peer: &str,
        epoch: &str,
        messages: &[WireMessage],
    ) -> Result<(i64, u64), StoreError> {
        let now = now_ms();
        let is_postgres = matches!(self.backend, Backend::Postgres(_));
        on_pool!(self, |pool, q| {
            let mut tx = pool.begin_write().await.map_err(StoreError::from_db)?;
            if is_postgres {
                // Replicas share the database: serialise writers of one (peer, epoch)
                // counter, as BEGIN IMMEDIATE does for SQLite.
                sqlx::query(&q("SELECT pg_advisory_xact_lock(hashtext(?))"))
                    .bind(format!("inbound:{peer}:{epoch}"))
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_db)?;
            }
            let row = sqlx::query(&q(
                "SELECT last_seq FROM inbound_state WHERE from_peer = ? AND epoch = ?",
            ))
            .bind(peer)
            .bind(epoch)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from_db)?;
            let mut last: i64 = match row {
                Some(r) => r.try_get(0)?,
                None => 0,
            };
            let before = last;
            let mut new = 0u64;
            for m in messages {
                if m.seq <= last {
                    continue; // a resend of something already stored
                }
                new += 1;
                sqlx::query(&q("INSERT INTO inbox (from_peer, message_id, content_type, body, received_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT (from_peer, message_id) DO NOTHING"))
                    .bind(peer)
                    .bind(&m.message_id)
                    .bind(&m.content_type)
                    .bind(&m.body)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_db)?;
                last = m.seq;
            }
            if before == 0 && last != 0 {
                // A new epoch of this peer. A peer resends under its newest numbering
                // only, so a few older counters suffice; beyond that they are dropped,
                // so a peer cannot grow the table by announcing ever new epochs.
                sqlx::query(&q("DELETE FROM inbound_state WHERE from_peer = ? AND epoch <> ? AND (SELECT COUNT(*) FROM inbound_state WHERE from_peer = ?) > ?"))
                    .bind(peer)
                    .bind(epoch)
                    .bind(peer)
                    .bind(MAX_EPOCHS_PER_PEER)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_db)?;
            }
            if last != before {
                sqlx::query(&q("INSERT INTO inbound_state (from_peer, epoch, last_seq) VALUES (?, ?, ?) ON CONFLICT (from_peer, epoch) DO UPDATE SET last_seq = excluded.last_seq"))
                    .bind(peer)
                    .bind(epoch)
                    .bind(last)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_db)?;
            }
            tx.commit().await.map_err(StoreError::from_db)?;
            Ok((last, new))
        })
    }

    /// The oldest unacknowledged inbox messages, in arrival order.
    pub async fn inbox(&self, limit: i64) -> Result<Vec<InboxMessage>, StoreError> {
        on_pool!(self, |pool, q| {
            let rows = sqlx::query(&q("SELECT from_peer, message_id, content_type, body, received_ms FROM inbox ORDER BY id LIMIT ?"))
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(StoreError::from_db)?;
            rows.iter()
                .map(|r| {
                    Ok(InboxMessage {
                        from_peer: r.try_get(0)?,
                        message_id: r.try_get(1)?,
                        content_type: r.try_get(2)?,
                        body: r.try_get(3)?,
                        received_ms: r.try_get(4)?,
                    })
                })
                .collect()
        })
    }

    /// Removes acknowledged inbox messages; returns how many were removed.
    /// Removes acknowledged inbox messages. Each entry is (sender, id), or just an id;
    /// a bare id is removed only when exactly one sender used it, since two partners
    /// may pick the same id: ambiguous bare ids are returned and nothing is removed
    /// for them. Returns (removed, ambiguous ids).
    pub async fn ack_inbox(
        &self,
        acks: &[(Option<String>, String)],
    ) -> Result<(u64, Vec<String>), StoreError> {
        on_pool!(self, |pool, q| {
            let mut tx = pool.begin_write().await.map_err(StoreError::from_db)?;
            let mut removed = 0;
            let mut ambiguous = Vec::new();
            for (from, id) in acks {
                let result = match from {
                    Some(from) => {
                        sqlx::query(&q(
                            "DELETE FROM inbox WHERE from_peer = ? AND message_id = ?",
                        ))
                        .bind(from)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                    }
                    None => {
                        let row =
                            sqlx::query(&q("SELECT COUNT(*) FROM inbox WHERE message_id = ?"))
                                .bind(id)
                                .fetch_one(&mut *tx)
                                .await
                                .map_err(StoreError::from_db)?;
                        if row.try_get::<i64, _>(0)? > 1 {
                            ambiguous.push(id.clone());
                            continue;
                        }
                        sqlx::query(&q("DELETE FROM inbox WHERE message_id = ?"))
                            .bind(id)
                            .execute(&mut *tx)
                            .await
                    }
                };
                removed += result.map_err(StoreError::from_db)?.rows_affected();
            }
            tx.commit().await.map_err(StoreError::from_db)?;
            Ok((removed, ambiguous))
        })
    }

    /// The highest sequence number ever assigned to a message for `peer`.
    pub async fn max_assigned_seq(&self, peer: &str) -> Result<i64, StoreError> {
        on_pool!(self, |pool, q| {
            let row = sqlx::query(&q(
                "SELECT next_seq - 1 FROM outbox_state WHERE peer_id = ?",
            ))
            .bind(peer)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::from_db)?;
            Ok(match row {
                Some(r) => r.try_get(0)?,
                None => 0,
            })
        })
    }

    /// The last sequence number assigned towards each partner that has one: one
    /// cheap query that tells replicas sharing the store which outboxes grew.
    pub async fn outbox_heads(&self) -> Result<Vec<(String, i64)>, StoreError> {
        on_pool!(self, |pool, q| {
            let rows = sqlx::query(&q("SELECT peer_id, next_seq - 1 FROM outbox_state"))
                .fetch_all(pool)
                .await
                .map_err(StoreError::from_db)?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
    }

    /// Number of messages in the inbox.
    pub async fn inbox_depth(&self) -> Result<i64, StoreError> {
        on_pool!(self, |pool, q| {
            let row = sqlx::query(&q("SELECT COUNT(*) FROM inbox"))
                .fetch_one(pool)
                .await
                .map_err(StoreError::from_db)?;
            Ok(row.try_get(0)?)
        })
    }

    /// Forgets idempotency keys older than the retention period.
    pub async fn prune_sent_ids(&self) -> Result<u64, StoreError> {
        let cutoff = now_ms() - SENT_ID_RETENTION.as_millis() as i64;
        on_pool!(self, |pool, q| {
            Ok(sqlx::query(&q("DELETE FROM sent_ids WHERE created_ms < ?"))
                .bind(cutoff)
                .execute(pool)
                .await
                .map_err(StoreError::from_db)?
                .rows_affected())
        })
    }

    /// Takes or keeps the lease on `peer`'s link for `owner` until now + `ttl_ms`;
    /// true when `owner` holds it afterwards. An expired lease of another owner
    /// is taken over.
    pub async fn acquire_lease(
        &self,
        peer: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        on_pool!(self, |pool, q| {
            let row = sqlx::query(&q("INSERT INTO link_leases (peer_id, owner, expires_ms) VALUES (?, ?, ?) \
                 ON CONFLICT (peer_id) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms \
                 WHERE link_leases.owner = excluded.owner OR link_leases.expires_ms < ? \
                 RETURNING owner"))
                .bind(peer)
                .bind(owner)
                .bind(now + ttl_ms)
                .bind(now)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::from_db)?;
            Ok(row.is_some())
        })
    }

    /// Extends every lease `owner` holds; returns the peers whose leases it still holds.
    pub async fn renew_leases(&self, owner: &str, ttl_ms: i64) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        on_pool!(self, |pool, q| {
            let rows = sqlx::query(&q("UPDATE link_leases SET expires_ms = ? WHERE owner = ? AND expires_ms >= ? RETURNING peer_id"))
                .bind(now + ttl_ms)
                .bind(owner)
                .bind(now)
                .fetch_all(pool)
                .await
                .map_err(StoreError::from_db)?;
            rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
        })
    }

    /// Gives up every lease of `owner` (clean shutdown: others take over at once).
    pub async fn release_leases(&self, owner: &str) -> Result<(), StoreError> {
        on_pool!(self, |pool, q| {
            sqlx::query(&q("DELETE FROM link_leases WHERE owner = ?"))
                .bind(owner)
                .execute(pool)
                .await
                .map_err(StoreError::from_db)?;
            Ok(())
        })
    }

    /// The current holder of `peer`'s lease, if unexpired.
    pub async fn lease_owner(&self, peer: &str) -> Result<Option<String>, StoreError> {
        let now = now_ms();
        on_pool!(self, |pool, q| {
            let row = sqlx::query(&q(
                "SELECT owner FROM link_leases WHERE peer_id = ? AND expires_ms >= ?",
            ))
            .bind(peer)
            .bind(now)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::from_db)?;
            Ok(match row {
                Some(r) => Some(r.try_get(0)?),
                None => None,
            })
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_for_postgres() {
        assert_eq!(to_postgres("a = ? AND b = ?"), "a = $1 AND b = $2");
    }

    fn msg(peer: &str, id: Option<&str>, body: &str) -> NewMessage {
        NewMessage {
            peer_id: peer.into(),
            message_id: id.map(str::to_string),
            content_type: "text/plain".into(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn wire(seq: i64, id: &str) -> WireMessage {
        WireMessage {
            seq,
            message_id: id.into(),
            content_type: "text/plain".into(),
            body: id.as_bytes().to_vec(),
        }
    }

    async fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("gw.db").display());
        let mut out = vec![(Store::open(&url).await.unwrap(), Some(dir))];
        if let Some(pg) = testdb::fresh_postgres().await {
            out.push((Store::open(&pg).await.unwrap(), None));
        }
        out
    }

    #[tokio::test]
    async fn outbox_assigns_sequences_and_deduplicates_ids() {
        for (store, _dir) in stores().await {
            let kind = store.kind();
            let r = store
                .enqueue(&[
                    msg("b", Some("m1"), "one"),
                    msg("b", None, "two"),
                    msg("c", None, "x"),
                ])
                .await
                .unwrap();
            assert_eq!(r[0], Accepted::Stored("m1".into()), "{kind}");
            let again = store
                .enqueue(&[msg("b", Some("m1"), "other body")])
                .await
                .unwrap();
            assert_eq!(again, vec![Accepted::Duplicate("m1".into())], "{kind}");
            let out = store.outbox_after("b", 0, 10).await.unwrap();
            assert_eq!(
                out.iter().map(|m| m.seq).collect::<Vec<_>>(),
                vec![1, 2],
                "{kind}"
            );
            assert_eq!(out[0].body, b"one");
            assert_eq!(
                store.outbox_after("c", 0, 10).await.unwrap()[0].seq,
                1,
                "{kind}"
            );
            assert_eq!(store.outbox_stats("b").await.unwrap().depth, 2);
            store.ack_outbox("b", 1).await.unwrap();
            assert_eq!(store.acked_seq("b").await.unwrap(), 1);
            assert_eq!(
                store.outbox_after("b", 0, 10).await.unwrap().len(),
                1,
                "{kind}"
            );
            // An old ack never moves the counter back.
            store.ack_outbox("b", 0).await.unwrap();
            assert_eq!(store.acked_seq("b").await.unwrap(), 1);
            // Delivered ids are still remembered: a retried POST stores nothing.
            assert_eq!(
                store.enqueue(&[msg("b", Some("m1"), "one")]).await.unwrap(),
                vec![Accepted::Duplicate("m1".into())]
            );
            store.close().await;
        }
    }

    #[tokio::test]
    async fn inbound_resends_are_dropped_and_a_new_epoch_starts_over() {
        for (store, _dir) in stores().await {
            let kind = store.kind();
            assert_eq!(
                store
                    .store_inbound("a", "e1", &[wire(1, "x1"), wire(2, "x2")])
                    .await
                    .unwrap(),
                (2, 2)
            );
            // Link dropped before our ack arrived: the sender resends 2 and sends 3.
            assert_eq!(
                store
                    .store_inbound("a", "e1", &[wire(2, "x2"), wire(3, "x3")])
                    .await
                    .unwrap(),
                (3, 1)
            );
            let inbox = store.inbox(10).await.unwrap();
            let ids: Vec<_> = inbox.iter().map(|m| m.message_id.as_str()).collect();
            assert_eq!(ids, vec!["x1", "x2", "x3"], "{kind}");
            // A wiped sender starts again at 1 under a new epoch: not a resend.
            assert_eq!(
                store
                    .store_inbound("a", "e2", &[wire(1, "y1")])
                    .await
                    .unwrap(),
                (1, 1)
            );
            assert_eq!(store.inbox_depth().await.unwrap(), 4);
            assert_eq!(
                store
                    .ack_inbox(&[
                        (None, "x1".into()),
                        (Some("a".into()), "x2".into()),
                        (None, "nope".into())
                    ])
                    .await
                    .unwrap(),
                (2, vec![])
            );
            assert_eq!(store.inbox(10).await.unwrap()[0].message_id, "x3", "{kind}");
            // Acked messages resent again are still not duplicated.
            assert_eq!(
                store
                    .store_inbound("a", "e1", &[wire(1, "x1")])
                    .await
                    .unwrap(),
                (3, 0)
            );
            assert_eq!(store.inbox_depth().await.unwrap(), 2);
            store.close().await;
        }
    }

    #[tokio::test]
    async fn same_id_from_two_peers_needs_the_sender_to_ack() {
        for (store, _dir) in stores().await {
            store
                .store_inbound("b", "e", &[wire(1, "same")])
                .await
                .unwrap();
            store
                .store_inbound("c", "e", &[wire(1, "same")])
                .await
                .unwrap();
            // A bare id is ambiguous: nothing is removed.
            assert_eq!(
                store.ack_inbox(&[(None, "same".into())]).await.unwrap(),
                (0, vec!["same".to_string()])
            );
            assert_eq!(store.inbox_depth().await.unwrap(), 2);
            assert_eq!(
                store
                    .ack_inbox(&[(Some("b".into()), "same".into())])
                    .await
                    .unwrap(),
                (1, vec![])
            );
            assert_eq!(store.inbox(10).await.unwrap()[0].from_peer, "c");
            store.close().await;
        }
    }

    #[tokio::test]
    async fn interleaved_partners_in_one_batch_get_consecutive_numbers_in_batch_order() {
        for (store, _dir) in stores().await {
            store.enqueue(&[msg("b", Some("old"), "0")]).await.unwrap();
            let r = store
                .enqueue(&[
                    msg("b", Some("m1"), "b1"),
                    msg("c", Some("m1"), "c1"),
                    msg("b", Some("old"), "again"),
                    msg("b", Some("m2"), "b2"),
                    msg("b", Some("m1"), "dup"),
                    msg("c", Some("m3"), "c2"),
                ])
                .await
                .unwrap();
            let stored = r
                .iter()
                .filter(|a| matches!(a, Accepted::Stored(_)))
                .count();
            assert_eq!(stored, 4, "{r:?}");
            let seqs = |peer: &'static str| {
                let store = &store;
                async move {
                    store
                        .outbox_after(peer, 0, 10)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|m| (m.seq, String::from_utf8_lossy(&m.body).into_owned()))
                        .collect::<Vec<_>>()
                }
            };
            assert_eq!(
                seqs("b").await,
                vec![(1, "0".into()), (2, "b1".into()), (3, "b2".into())]
            );
            assert_eq!(seqs("c").await, vec![(1, "c1".into()), (2, "c2".into())]);
            // The next batch continues each partner's numbering.
            store.enqueue(&[msg("c", None, "c3")]).await.unwrap();
            assert_eq!(store.max_assigned_seq("c").await.unwrap(), 3);
            assert_eq!(store.max_assigned_seq("b").await.unwrap(), 3);
            let mut heads = store.outbox_heads().await.unwrap();
            heads.sort();
            assert_eq!(heads, vec![("b".to_string(), 3), ("c".to_string(), 3)]);
            store.close().await;
        }
    }

    #[tokio::test]
    async fn one_id_sent_to_two_peers_in_one_batch_is_two_messages() {
        for (store, _dir) in stores().await {
            let r = store
                .enqueue(&[
                    msg("b", Some("shared"), "x"),
                    msg("c", Some("shared"), "y"),
                    msg("b", Some("shared"), "z"),
                ])
                .await
                .unwrap();
            assert_eq!(
                r,
                vec![
                    Accepted::Stored("shared".into()),
                    Accepted::Stored("shared".into()),
                    Accepted::Duplicate("shared".into())
                ]
            );
            assert_eq!(store.outbox_stats("c").await.unwrap().depth, 1);
            assert_eq!(store.max_assigned_seq("b").await.unwrap(), 1);
            store.close().await;
        }
    }

    #[tokio::test]
    async fn a_peer_cannot_grow_the_dedup_table_with_new_epochs() {
        for (store, _dir) in stores().await {
            for e in 0..20 {
                store
                    .store_inbound("p", &format!("e{e}"), &[wire(1, &format!("m{e}"))])
                    .await
                    .unwrap();
            }
            let rows: i64 = on_pool!(store, |pool, q| {
                let row = sqlx::query(&q(
                    "SELECT COUNT(*) FROM inbound_state WHERE from_peer = 'p'",
                ))
                .fetch_one(pool)
                .await
                .unwrap();
                row.try_get::<i64, _>(0).unwrap()
            });
            assert!(rows <= MAX_EPOCHS_PER_PEER + 1, "{rows} counters kept");
            store.close().await;
        }
    }

    #[tokio::test]
    async fn epoch_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("gw.db").display());
        let first = Store::open(&url).await.unwrap();
        let epoch = first.current_epoch("b").await.unwrap();
        first.close().await;
        let again = Store::open(&url).await.unwrap();
        // One process per SQLite store: a second opening is refused while it is open.
        let err = Store::open(&url).await.err().expect("second open refused");
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
        assert_eq!(again.current_epoch("b").await.unwrap(), epoch);
        let rotated = again.rotate_epoch("b", &epoch).await.unwrap();
        assert_ne!(rotated, epoch);
        // A stale rotation (another replica already rotated) changes nothing.
        assert_eq!(again.rotate_epoch("b", &epoch).await.unwrap(), rotated);
        // Only towards that peer.
        assert_eq!(again.current_epoch("c").await.unwrap(), epoch);
    }

    /// Write transactions that their caller abandons at any point (an HTTP client
    /// that hangs up, a timeout around a handshake) must leave no connection in
    /// the pool holding SQLite's write lock or PostgreSQL's open transaction: one
    /// such connection made every later write fail with "database is locked".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_writes_leave_no_transaction_open() {
        use std::future::Future;
        for (store, _dir) in stores().await {
            let kind = store.kind();
            let mut rng = 0x2545_f491_4f6c_dd1d_u64;
            for round in 0..3_000u32 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let polls = rng % 6;
                let pause = std::time::Duration::from_micros(rng % 200);
                let acks = [(Some("a".to_string()), format!("m{round}"))];
                let mut write = std::pin::pin!(store.ack_inbox(&acks));
                let waker = futures_util::task::noop_waker();
                let mut cx = std::task::Context::from_waker(&waker);
                for _ in 0..polls {
                    if write.as_mut().poll(&mut cx).is_ready() {
                        break;
                    }
                    std::thread::sleep(pause);
                }
                // Dropped here, wherever it got to.
            }
            // Every pooled connection must still write, promptly.
            for i in 0..16 {
                let acks = [(Some("a".to_string()), format!("after{i}"))];
                let done =
                    tokio::time::timeout(std::time::Duration::from_secs(5), store.ack_inbox(&acks))
                        .await;
                assert!(
                    matches!(done, Ok(Ok(_))),
                    "{kind}: write {i} after abandoned writes: {done:?}"
                );
            }
            store.close().await;
        }
    }
}
