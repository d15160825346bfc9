//! The inbox: messages partners sent, stored once per (partner, epoch,
//! sequence number), until local applications acknowledge them.

use sqlx::Row;

use super::{now_ms, random_id, InboxMessage, UntrackedMessage, WireMessage, MAX_EPOCHS_PER_PEER};
use super::{Backend, Store, StoreError, WritePool};

impl Store {
    /// Stores messages that came without a sequence number (a swpt-stomp
    /// partner's SENDs), each under a new id, in one transaction; returns how
    /// many. No deduplication is possible: swpt_stomp numbers messages per
    /// connection, so a resend after a reconnect is stored again (at least once).
    pub async fn store_untracked(
        &self,
        peer: &str,
        messages: &[UntrackedMessage],
    ) -> Result<u64, StoreError> {
        let started = std::time::Instant::now();
        let now = now_ms();
        let result = on_pool!(self, |pool, q| {
            let mut tx = pool.begin_write().await.map_err(StoreError::from_db)?;
            for m in messages {
                sqlx::query(&q("INSERT INTO inbox (from_peer, message_id, content_type, message_type, body, received_ms) VALUES (?, ?, ?, ?, ?, ?)"))
                    .bind(peer)
                    .bind(format!("stomp-{}", random_id()))
                    .bind(&m.content_type)
                    .bind(&m.message_type)
                    .bind(&m.body)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_db)?;
            }
            tx.commit().await.map_err(StoreError::from_db)?;
            Ok(messages.len() as u64)
        });
        crate::metrics::observe(&self.commit_latency, started.elapsed());
        result
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
        crate::metrics::observe(&self.commit_latency, started.elapsed());
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
                sqlx::query(&q("INSERT INTO inbox (from_peer, message_id, content_type, message_type, body, received_ms) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (from_peer, message_id) DO NOTHING"))
                    .bind(peer)
                    .bind(&m.message_id)
                    .bind(&m.content_type)
                    .bind(&m.message_type)
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
            let rows = sqlx::query(&q("SELECT from_peer, message_id, content_type, body, received_ms, message_type FROM inbox ORDER BY id LIMIT ?"))
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
                        message_type: r.try_get(5)?,
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
}
