//! What the writer knows about the storage: the files it has open (so a
//! database deleted or replaced under it is noticed) and which errors are
//! the storage's rather than one item's.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::store::StoreError;

/// The files the writer has open, by device and inode, to notice when
/// `store.path` stops naming them (deleted, or replaced by another file):
/// writing on would acknowledge events into a file nobody will open again.
#[derive(Debug, Clone)]
pub(super) struct DatabaseFiles {
    /// `store.path`, as configured.
    path: PathBuf,
    /// The WAL, next to the file SQLite resolved `path` to.
    pub(super) wal_path: PathBuf,
    db: (u64, u64),
    wal: Option<(u64, u64)>,
}

fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

impl DatabaseFiles {
    /// The files open now (the database is open, in WAL mode, migrated).
    pub(super) fn of(path: &Path) -> anyhow::Result<DatabaseFiles> {
        let db = identity(path).with_context(|| format!("cannot stat {}", path.display()))?;
        let resolved = std::fs::canonicalize(path)
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        let mut wal_path = resolved.into_os_string();
        wal_path.push("-wal");
        let wal_path = PathBuf::from(wal_path);
        Ok(DatabaseFiles {
            path: path.to_owned(),
            wal: identity(&wal_path).ok(),
            wal_path,
            db,
        })
    }

    /// Whether the paths still name the files open (two `stat`s).
    pub(super) fn check(&self) -> Result<(), String> {
        let same = |path: &Path, expected: (u64, u64)| match identity(path) {
            Ok(found) if found == expected => Ok(()),
            Ok(_) => Err("replaced by another file"),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err("deleted"),
            Err(_) => Err("no longer accessible"),
        };
        same(&self.path, self.db)
            .and_then(|()| self.wal.map_or(Ok(()), |wal| same(&self.wal_path, wal)))
            .map_err(|what| {
                format!(
                    "database {} was {what} while open; nothing more is written to it: put it back, or restart vodhook to start a new one",
                    self.path.display()
                )
            })
    }
}

pub(super) fn unavailable(error: &rusqlite::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// An error of the storage (disk, file, lock) rather than of one item:
/// while they occur, the store is not ready.
pub(super) fn storage_error(error: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        error.sqlite_error_code(),
        Some(
            C::DiskFull
                | C::SystemIoFailure
                | C::CannotOpen
                | C::ReadOnly
                | C::DatabaseBusy
                | C::DatabaseLocked
                | C::DatabaseCorrupt
                | C::NotADatabase
                | C::PermissionDenied
                | C::FileLockingProtocolFailed
                | C::NoLargeFileSupport
        )
    )
}
