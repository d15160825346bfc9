//! Outbox epochs: the store-wide numbering our Hello announces, and the
//! per-partner epoch started when a partner proves our store was restored from
//! an older copy.

use sqlx::Row;

use super::random_id;
use super::{Backend, Store, StoreError};

impl Store {
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

    pub(super) async fn ensure_epoch(&self) -> Result<String, StoreError> {
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
}
