//! Storage: an append-only log (the offline store, and the write-ahead log of the online one) and the
//! online store, the latest value of each feature of each entity in redb, with a bounded cache in front.
//!
//! A write appends its rows to the log as one checksummed batch and syncs it, then applies them to the
//! online store in one redb transaction that also records how far the log has been applied, then updates
//! the cache; only then is it acknowledged. After a crash, opening the store truncates a torn last batch
//! (never acknowledged) and applies whatever the online store has not, so every acknowledged row is there
//! and no manual step is needed.

use crate::Error;
use crate::schema::{Key, Reader, Row, Schema, Value};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const ONLINE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("online");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// How far (bytes) the log has been applied to the online table.
const APPLIED: &str = "log_applied";
const MAGIC: &[u8; 4] = b"MZF1";
const HEADER: usize = 4 + 1 + 4 + 8;
/// Batch flags: whether its rows go to the online store, the offline store, or both.
pub const ONLINE_FLAG: u8 = 1;
pub const OFFLINE_FLAG: u8 = 2;

/// One feature's latest value in the online store.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub event_micros: i64,
    pub created_micros: i64,
    pub value: Value,
}

/// The online row of one entity: a cell per feature of the schema (`None`: never written).
pub type OnlineRow = Vec<Option<Cell>>;

/// Where each write should go (Feast's `to` of a push).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Targets(pub u8);

/// The store of one FeatureSet.
pub struct Store {
    schema: Arc<Schema>,
    db: redb::Database,
    log: Mutex<File>,
    log_path: std::path::PathBuf,
    cache: Cache,
}

/// What a write did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub rows: usize,
    /// Feature values that did not replace the stored one because it is newer.
    pub ignored_older: usize,
}

impl Store {
    /// Opens (or creates) the store under `dir`, recovering from a crash if there was one.
    pub fn open(dir: &Path, schema: Arc<Schema>, cache_bytes: u64) -> Result<Self, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
        keep_layout(dir, &schema)?;
        let db = redb::Database::create(dir.join("online.redb")).map_err(Error::db)?;
        let log_path = dir.join("offline.log");
        let mut log = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::internal(format!("opening {}: {e}", log_path.display())))?;
        let store = Self {
            cache: Cache::new((cache_bytes / 512).max(1024) as usize),
            schema,
            db,
            log: Mutex::new(log.try_clone().map_err(|e| Error::internal(e.to_string()))?),
            log_path,
        };
        store.recover(&mut log)?;
        Ok(store)
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Reads the log, truncates a torn last batch, and applies to the online store what it lacks.
    fn recover(&self, log: &mut File) -> Result<(), Error> {
        let applied = {
            let txn = self.db.begin_read().map_err(Error::db)?;
            match txn.open_table(META) {
                Ok(t) => t.get(APPLIED).map_err(Error::db)?.map_or(0, |v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(Error::db(e)),
            }
        };
        let mut pending = Vec::new();
        let good = scan(log, |flags, end, rows| {
            if end > applied && flags & ONLINE_FLAG != 0 {
                pending.push((end, rows));
            }
        })
        .map_err(|e| Error::internal(format!("reading {}: {e}", self.log_path.display())))?;
        let len = log.metadata().map_err(|e| Error::internal(e.to_string()))?.len();
        if good < len {
            tracing::warn!(
                from = len,
                to = good,
                "truncating a torn last batch of the log (never acknowledged)"
            );
            log.set_len(good).map_err(|e| Error::internal(format!("truncating the log: {e}")))?;
            log.sync_all().map_err(|e| Error::internal(e.to_string()))?;
        }
        if !pending.is_empty() {
            tracing::info!(
                batches = pending.len(),
                applied,
                log = good,
                "applying the log's tail to the online store"
            );
        }
        for (end, rows) in pending {
            self.apply_online(&rows, end)?;
        }
        Ok(())
    }

    /// Writes `rows` where `to` says, durably, and returns once they are acknowledged-safe.
    pub fn write(&self, rows: &[Row], to: Targets) -> Result<Written, Error> {
        if rows.is_empty() {
            return Ok(Written::default());
        }
        let mut payload = Vec::with_capacity(rows.len() * 64);
        encode_rows(rows, &mut payload);
        if payload.len() > u32::MAX as usize {
            return Err(Error::invalid(format!(
                "{} rows are too many for one write: split them",
                rows.len()
            )));
        }
        let mut batch = Vec::with_capacity(HEADER + payload.len());
        batch.extend_from_slice(MAGIC);
        batch.push(to.0);
        batch.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        batch.extend_from_slice(&checksum(&payload).to_le_bytes());
        batch.extend_from_slice(&payload);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let start = log.seek(SeekFrom::End(0)).map_err(|e| Error::internal(format!("the log: {e}")))?;
        let appended = log.write_all(&batch).and_then(|()| log.sync_data());
        if let Err(e) = appended {
            // Leave no partial batch behind a failed write.
            let _ = log.set_len(start);
            return Err(Error::internal(format!("writing the log: {e}")));
        }
        let end = start + batch.len() as u64;
        let mut written = Written { rows: rows.len(), ignored_older: 0 };
        if to.0 & ONLINE_FLAG != 0 {
            written.ignored_older = self.apply_online(rows, end)?;
        }
        Ok(written)
    }

    /// Merges rows into the online table (a newer event wins; the same event time: the later created time,
    /// then the later write) and records the log offset `end`, in one transaction; then the cache.
    fn apply_online(&self, rows: &[Row], end: u64) -> Result<usize, Error> {
        let mut ignored = 0;
        let mut merged: HashMap<&Key, OnlineRow> = HashMap::new();
        let txn = self.db.begin_write().map_err(Error::db)?;
        {
            let mut table = txn.open_table(ONLINE).map_err(Error::db)?;
            let mut key_bytes = Vec::new();
            for row in rows {
                if !merged.contains_key(&row.key) {
                    key_bytes.clear();
                    row.key.encode(&mut key_bytes);
                    let current = table
                        .get(key_bytes.as_slice())
                        .map_err(Error::db)?
                        .and_then(|v| decode_online(v.value(), self.schema.features.len()))
                        .unwrap_or_else(|| vec![None; self.schema.features.len()]);
                    merged.insert(&row.key, current);
                }
                let current = merged.get_mut(&row.key).expect("just inserted");
                for (index, value) in &row.values {
                    let Some(slot) = current.get_mut(*index as usize) else { continue };
                    let newer = slot.as_ref().is_none_or(|c| {
                        (row.event_micros, row.created_micros) >= (c.event_micros, c.created_micros)
                    });
                    if newer {
                        *slot = Some(Cell {
                            event_micros: row.event_micros,
                            created_micros: row.created_micros,
                            value: value.clone(),
                        });
                    } else {
                        ignored += 1;
                    }
                }
            }
            let mut value_bytes = Vec::new();
            for (key, row) in &merged {
                key_bytes.clear();
                key.encode(&mut key_bytes);
                value_bytes.clear();
                encode_online(row, &mut value_bytes);
                table.insert(key_bytes.as_slice(), value_bytes.as_slice()).map_err(Error::db)?;
            }
            let mut meta = txn.open_table(META).map_err(Error::db)?;
            meta.insert(APPLIED, end).map_err(Error::db)?;
        }
        txn.commit().map_err(Error::db)?;
        self.cache.written(merged.into_iter().map(|(k, r)| (k.clone(), Arc::new(r))));
        Ok(ignored)
    }

    /// The online rows of `keys` (`None`: an entity never written).
    pub fn lookup(&self, keys: &[Key]) -> Result<Vec<Option<Arc<OnlineRow>>>, Error> {
        let mut out: Vec<Option<Arc<OnlineRow>>> = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match self.cache.get(key) {
                Some(row) => out.push(Some(row)),
                None => {
                    out.push(None);
                    missing.push(i);
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let epoch = self.cache.epoch();
        let txn = self.db.begin_read().map_err(Error::db)?;
        let table = match txn.open_table(ONLINE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
            Err(e) => return Err(Error::db(e)),
        };
        let mut key_bytes = Vec::new();
        for i in missing {
            key_bytes.clear();
            keys[i].encode(&mut key_bytes);
            if let Some(v) = table.get(key_bytes.as_slice()).map_err(Error::db)? {
                let row = decode_online(v.value(), self.schema.features.len())
                    .ok_or_else(|| Error::internal("a corrupt online row".to_string()))?;
                let row = Arc::new(row);
                self.cache.filled(epoch, keys[i].clone(), row.clone());
                out[i] = Some(row);
            }
        }
        Ok(out)
    }

    /// Entities in the online store.
    pub fn entity_count(&self) -> Result<u64, Error> {
        let txn = self.db.begin_read().map_err(Error::db)?;
        match txn.open_table(ONLINE) {
            Ok(t) => t.len().map_err(Error::db),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(Error::db(e)),
        }
    }

    /// Every offline row of the entities in `keys`, in log order (the order written).
    pub fn history(&self, keys: &std::collections::HashSet<Key>) -> Result<HashMap<Key, Vec<Row>>, Error> {
        // Only what was acknowledged: the log up to now, read through its own handle.
        let mut log = File::open(&self.log_path).map_err(|e| Error::internal(format!("the log: {e}")))?;
        let mut out: HashMap<Key, Vec<Row>> = HashMap::new();
        scan(&mut log, |flags, _, rows| {
            if flags & OFFLINE_FLAG != 0 {
                for row in rows {
                    if keys.contains(&row.key) {
                        out.entry(row.key.clone()).or_default().push(row);
                    }
                }
            }
        })
        .map_err(|e| Error::internal(format!("reading the log: {e}")))?;
        Ok(out)
    }
}

/// The layout the data under `dir` was written with (`layout.json`): a schema that cannot read it is
/// refused before anything is opened; one that can (features appended) becomes the recorded layout.
fn keep_layout(dir: &Path, schema: &Schema) -> Result<(), Error> {
    use mizzen_api::v1alpha1::feature_set::StoredLayout;
    let path = dir.join("layout.json");
    let new = StoredLayout { key_type: schema.key_type, features: schema.features.clone() };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let old: StoredLayout = serde_json::from_slice(&bytes)
                .map_err(|e| Error::internal(format!("reading {}: {e}", path.display())))?;
            if old == new {
                return Ok(());
            }
            old.can_become(&new).map_err(|why| {
                Error::invalid(format!(
                    "the data in {} was written for other features, and this FeatureSet cannot read it: {why}; \
                     revert the change or serve the new features from a new FeatureSet",
                    dir.display()
                ))
            })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::internal(format!("reading {}: {e}", path.display()))),
    }
    // Written whole or not at all: a temporary file, synced, renamed over the old one.
    let tmp = dir.join("layout.json.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&new).unwrap_or_default())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| Error::internal(format!("writing {}: {e}", path.display())))
}

/// Reads whole, valid batches from the start of `log`, calling `each(flags, end offset, rows)`; returns
/// the offset after the last valid batch (a torn or corrupt one ends the scan there).
fn scan(log: &mut File, mut each: impl FnMut(u8, u64, Vec<Row>)) -> std::io::Result<u64> {
    log.seek(SeekFrom::Start(0))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, log);
    let mut offset = 0u64;
    let mut header = [0u8; HEADER];
    loop {
        if read_full(&mut reader, &mut header)? < HEADER || &header[..4] != MAGIC {
            return Ok(offset);
        }
        let flags = header[4];
        let len = u32::from_le_bytes(header[5..9].try_into().expect("4 bytes")) as usize;
        let sum = u64::from_le_bytes(header[9..17].try_into().expect("8 bytes"));
        let mut payload = vec![0u8; len];
        if read_full(&mut reader, &mut payload)? < len || checksum(&payload) != sum {
            return Ok(offset);
        }
        let Some(rows) = decode_rows(&payload) else { return Ok(offset) };
        offset += (HEADER + len) as u64;
        each(flags, offset, rows);
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// FNV-1a, 64 bits: enough to tell a torn or garbled batch from a whole one.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn encode_rows(rows: &[Row], out: &mut Vec<u8>) {
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    let mut key = Vec::new();
    for row in rows {
        key.clear();
        row.key.encode(&mut key);
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(&key);
        out.extend_from_slice(&row.event_micros.to_le_bytes());
        out.extend_from_slice(&row.created_micros.to_le_bytes());
        out.extend_from_slice(&(row.values.len() as u16).to_le_bytes());
        for (index, value) in &row.values {
            out.extend_from_slice(&index.to_le_bytes());
            value.encode(out);
        }
    }
}

fn decode_rows(bytes: &[u8]) -> Option<Vec<Row>> {
    let mut r = Reader(bytes);
    let n = u32::from_le_bytes(r.array()?) as usize;
    let mut rows = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        let key_len = u16::from_le_bytes(r.array()?) as usize;
        let key = Key::decode(r.take(key_len)?)?;
        let event_micros = r.i64()?;
        let created_micros = r.i64()?;
        let count = u16::from_le_bytes(r.array()?) as usize;
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            values.push((u16::from_le_bytes(r.array()?), Value::decode(&mut r)?));
        }
        rows.push(Row { key, event_micros, created_micros, values });
    }
    r.0.is_empty().then_some(rows)
}

fn encode_online(row: &OnlineRow, out: &mut Vec<u8>) {
    for cell in row {
        match cell {
            None => out.push(0),
            Some(c) => {
                out.push(1);
                out.extend_from_slice(&c.event_micros.to_le_bytes());
                out.extend_from_slice(&c.created_micros.to_le_bytes());
                c.value.encode(out);
            }
        }
    }
}

/// An online row, as many cells as the schema has features (a row stored under a schema with fewer
/// features gets empty cells for the new ones).
fn decode_online(bytes: &[u8], features: usize) -> Option<OnlineRow> {
    let mut r = Reader(bytes);
    let mut row = Vec::with_capacity(features);
    while !r.0.is_empty() {
        row.push(match r.u8()? {
            0 => None,
            _ => {
                Some(Cell { event_micros: r.i64()?, created_micros: r.i64()?, value: Value::decode(&mut r)? })
            }
        });
    }
    row.resize(features, None);
    Some(row)
}

/// The hot online rows, at most `capacity` of them. Writes replace entries after their commit; a read that
/// missed fills an entry only if no write happened since it began (`epoch`), so the cache never holds a
/// row older than the store's.
struct Cache {
    capacity: usize,
    epoch: AtomicU64,
    rows: Mutex<HashMap<Key, Arc<OnlineRow>>>,
}

impl Cache {
    fn new(capacity: usize) -> Self {
        Self { capacity, epoch: AtomicU64::new(0), rows: Mutex::new(HashMap::new()) }
    }

    fn get(&self, key: &Key) -> Option<Arc<OnlineRow>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn written(&self, rows: impl Iterator<Item = (Key, Arc<OnlineRow>)>) {
        let mut cache = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for (key, row) in rows {
            self.make_room(&mut cache);
            cache.insert(key, row);
        }
    }

    fn filled(&self, epoch: u64, key: Key, row: Arc<OnlineRow>) {
        let mut cache = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.make_room(&mut cache);
            cache.entry(key).or_insert(row);
        }
    }

    /// At capacity, drops an eighth of the entries (whichever the map yields first).
    fn make_room(&self, cache: &mut HashMap<Key, Arc<OnlineRow>>) {
        if cache.len() >= self.capacity {
            let victims: Vec<Key> = cache.keys().take(self.capacity / 8 + 1).cloned().collect();
            for key in victims {
                cache.remove(&key);
            }
        }
    }
}
