//! Group commit for messages submitted through the API.
//!
//! Every accepted message must be durable before the API answers, and an
//! fsync per message would cap throughput at the disk's fsync rate. Requests
//! queue here; one task stores everything queued in a single transaction and
//! answers all of them, so many messages share one fsync under load while a
//! lone message still commits at once.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Accepted, NewMessage, Store, StoreError};

/// Most messages stored in one transaction.
const MAX_GROUP_MESSAGES: usize = 2048;

struct Request {
    batch: Vec<NewMessage>,
    reply: oneshot::Sender<Result<Vec<Accepted>, Arc<StoreError>>>,
}

/// Handle to the committing task.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
}

impl Committer {
    /// Starts the committing task.
    pub fn start(store: Arc<Store>) -> Committer {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(store, rx));
        Committer { tx }
    }

    /// Stores `batch` atomically; returns once it is durable.
    pub async fn submit(&self, batch: Vec<NewMessage>) -> Result<Vec<Accepted>, Arc<StoreError>> {
        let (reply, rx) = oneshot::channel();
        let gone = || Arc::new(StoreError::Db(sqlx::Error::PoolClosed));
        self.tx
            .send(Request { batch, reply })
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

async fn run(store: Arc<Store>, mut rx: mpsc::Receiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let mut count = group[0].batch.len();
        while count < MAX_GROUP_MESSAGES {
            match rx.try_recv() {
                Ok(r) => {
                    count += r.batch.len();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        commit(&store, group).await;
    }
}

async fn commit(store: &Store, group: Vec<Request>) {
    let all: Vec<NewMessage> = group.iter().flat_map(|r| r.batch.iter().cloned()).collect();
    match store.enqueue(&all).await {
        Ok(results) => {
            let mut results = results.into_iter();
            for r in group {
                let mine: Vec<Accepted> = results.by_ref().take(r.batch.len()).collect();
                let _ = r.reply.send(Ok(mine));
            }
        }
        Err(e) if group.len() > 1 && !e.is_transient() => {
            // One request may be at fault: retry each alone so the others succeed.
            for r in group {
                let result = store.enqueue(&r.batch).await.map_err(Arc::new);
                let _ = r.reply.send(result);
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for r in group {
                let _ = r.reply.send(Err(e.clone()));
            }
        }
    }
}
