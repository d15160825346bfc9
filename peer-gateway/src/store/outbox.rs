//! The outbox: messages accepted from local applications, numbered per
//! partner, until the partner acknowledges them; and the idempotency keys.

use sqlx::Row;

use super::{Backend, Store, StoreError, WritePool};
use std::collections::BTreeMap;

use super::{now_ms, random_id, Accepted, NewMessage, OutboxStats, WireMessage, SENT_ID_RETENTION};

impl Store {
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
        crate::metrics::observe(&self.commit_latency, started.elapsed());
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
                sqlx::query(&q("INSERT INTO outbox (peer_id, seq, message_id, content_type, message_type, body, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)"))
                    .bind(&m.peer_id)
                    .bind(*seq)
                    .bind(id)
                    .bind(&m.content_type)
                    .bind(&m.message_type)
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
            let rows = sqlx::query(&q("SELECT seq, message_id, content_type, body, message_type FROM outbox WHERE peer_id = ? AND seq > ? ORDER BY seq LIMIT ?"))
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
                        message_type: r.try_get(4)?,
                    })
                })
                .collect()
        })
    }

    /// The highest sequence number `peer` has acknowledged.
    pub async fn acked_seq(&self, peer: &str) -> Result<i64, StoreError> {
        self.outbox_counter(peer, "SELECT acked_seq FROM outbox_state WHERE peer_id = ?")
            .await
    }

    /// One number from `peer`'s outbox_state row (`sql` selects it), 0 when the
    /// partner has none yet.
    async fn outbox_counter(&self, peer: &str, sql: &'static str) -> Result<i64, StoreError> {
        on_pool!(self, |pool, q| {
            let row = sqlx::query(&q(sql))
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
        crate::metrics::observe(&self.commit_latency, started.elapsed());
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

    /// The highest sequence number ever assigned to a message for `peer`.
    pub async fn max_assigned_seq(&self, peer: &str) -> Result<i64, StoreError> {
        self.outbox_counter(
            peer,
            "SELECT next_seq - 1 FROM outbox_state WHERE peer_id = ?",
        )
        .await
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
}
