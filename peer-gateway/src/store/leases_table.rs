//! Link leases: which replica of a node owns each partner's link (PostgreSQL
//! stores shared by replicas; see `crate::leases`).

use sqlx::Row;

use super::now_ms;
use super::{Backend, Store, StoreError};

impl Store {
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
}
