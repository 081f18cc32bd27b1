//! The registry's metadata: JSON documents under string keys in one redb table, read and written in
//! transactions. A write transaction commits durably (fsync) before the request that made it is
//! answered, so an acknowledged registration or alias move survives a crash, and a reader never sees a
//! half-made change.

use crate::error::ApiError;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

const DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("docs");

pub struct Store {
    db: redb::Database,
}

/// The documents a transaction sees (and, in a write transaction, changes).
pub struct Tx<'t> {
    table: TableRef<'t>,
}

enum TableRef<'t> {
    Read(redb::ReadOnlyTable<&'static str, &'static [u8]>),
    Write(redb::Table<'t, &'static str, &'static [u8]>),
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("metadata store: {e}"))
}

impl Store {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, ApiError> {
        let db = redb::Database::create(path).map_err(internal)?;
        let tx = db.begin_write().map_err(internal)?;
        tx.open_table(DOCS).map_err(internal)?;
        tx.commit().map_err(internal)?;
        Ok(Self { db })
    }

    /// Runs `f` on a snapshot.
    pub fn read<R>(&self, f: impl FnOnce(&Tx<'_>) -> Result<R, ApiError>) -> Result<R, ApiError> {
        let tx = self.db.begin_read().map_err(internal)?;
        let table = tx.open_table(DOCS).map_err(internal)?;
        f(&Tx { table: TableRef::Read(table) })
    }

    /// Runs `f` in a write transaction and commits it durably when `f` succeeds (nothing changes when it
    /// fails).
    pub fn write<R>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<R, ApiError>) -> Result<R, ApiError> {
        let tx = self.db.begin_write().map_err(internal)?;
        let out = {
            let table = tx.open_table(DOCS).map_err(internal)?;
            let mut t = Tx { table: TableRef::Write(table) };
            f(&mut t)?
        };
        tx.commit().map_err(internal)?;
        Ok(out)
    }
}

impl Tx<'_> {
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ApiError> {
        let bytes = match &self.table {
            TableRef::Read(t) => t.get(key).map_err(internal)?.map(|v| v.value().to_vec()),
            TableRef::Write(t) => t.get(key).map_err(internal)?.map(|v| v.value().to_vec()),
        };
        bytes.map(|b| serde_json::from_slice(&b).map_err(internal)).transpose()
    }

    /// The documents whose keys start with `prefix`, in key order.
    pub fn scan<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>, ApiError> {
        let mut out = Vec::new();
        let mut push = |k: &str, v: &[u8]| -> Result<bool, ApiError> {
            if !k.starts_with(prefix) {
                return Ok(false);
            }
            out.push((k.to_string(), serde_json::from_slice(v).map_err(internal)?));
            Ok(true)
        };
        match &self.table {
            TableRef::Read(t) => {
                for item in t.range(prefix..).map_err(internal)? {
                    let (k, v) = item.map_err(internal)?;
                    if !push(k.value(), v.value())? {
                        break;
                    }
                }
            }
            TableRef::Write(t) => {
                for item in t.range(prefix..).map_err(internal)? {
                    let (k, v) = item.map_err(internal)?;
                    if !push(k.value(), v.value())? {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn put<T: Serialize>(&mut self, key: &str, value: &T) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(value).map_err(internal)?;
        match &mut self.table {
            TableRef::Write(t) => t.insert(key, bytes.as_slice()).map(|_| ()).map_err(internal),
            TableRef::Read(_) => Err(internal("a write in a read transaction")),
        }
    }

    pub fn delete(&mut self, key: &str) -> Result<(), ApiError> {
        match &mut self.table {
            TableRef::Write(t) => t.remove(key).map(|_| ()).map_err(internal),
            TableRef::Read(_) => Err(internal("a write in a read transaction")),
        }
    }
}
