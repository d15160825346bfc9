//! One module per command.

pub mod bundle;
pub mod import;
pub mod info;
pub mod init;
pub mod list;
pub mod partner;
pub mod peer;
pub mod revoke;
pub mod server;
pub mod swaptacular;
pub mod verify;

use peerlink_cadb::CaDb;
use peerlink_pki::fsutil::FileTransaction;

use crate::error::{CliError, CliResult};

/// Every command that changes the CA directory must either complete or leave it
/// byte-for-byte as it was, and the database and the files must never disagree.
/// So `work` runs inside one database transaction and one [`FileTransaction`]:
/// on any error (its own or the commit's) the database is rolled back, then the
/// files; the files are kept only once the database has committed.
pub(crate) async fn in_transaction<T>(
    db: &mut CaDb,
    work: impl AsyncFnOnce(&mut CaDb, &mut FileTransaction) -> CliResult<T>,
) -> CliResult<T> {
    db.begin().await?;
    let mut files = FileTransaction::new();
    let result = match work(db, &mut files).await {
        Ok(value) => db.commit().await.map(|()| value).map_err(CliError::from),
        Err(e) => Err(e),
    };
    if result.is_err() {
        db.rollback().await;
        files.rollback();
    }
    result
}
