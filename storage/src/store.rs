//! `Store`: one RocksDB per node with the column families of `keys`, holding both the Raft log
//! and the ledger's state. Raft-facing calls deal in encoded bytes (the consensus crate owns the
//! openraft types); ledger-facing calls go through [`RocksView`], a `StateView` with an overlay
//! whose writes land in one `WriteBatch` together with the last applied log id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options};
use rocksdb::{WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::codec::{self, CodecError};
use crate::keys::*;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// All memtables of a node's database together stay below this.
const DB_WRITE_BUFFER_BYTES: usize = 128 * 1024 * 1024;

/// The state families' table blocks (data, index, filters) held in memory, all families
/// together, unless the node says otherwise. RocksDB's default is 32 MiB per family: at
/// 100,000 accounts and more, the reads of a payment (card, bill, account, request) missed it
/// and decompressed their blocks again (issue 21).
pub const DEFAULT_BLOCK_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// One list of [`Store::insurance_day`]: a page of lines (the insured bill and its bill), the
/// splits of the whole day's list, and whether lines are left after the page.
#[derive(Debug, Default)]
pub struct InsuranceList {
    pub lines: Vec<(l::InsuredBill, Option<l::Bill>)>,
    pub splits: Vec<l::InsuranceSplit>,
    pub more: bool,
}

/// A business day's insured bills: settled that day, and reversed that day.
#[derive(Debug)]
pub struct InsuranceDay {
    pub settled: InsuranceList,
    pub reversed: InsuranceList,
}

/// A node's database.
pub struct Store {
    pub(crate) db: DB,
    path: PathBuf,
    /// Readers hold it shared; a snapshot install holds it alone, so nobody reads a state that
    /// is half replaced.
    gate: RwLock<()>,
    /// The state families' block cache (their options name it).
    cache: rocksdb::Cache,
}

/// The options of family `name`: what it is opened with, and what the table files a snapshot
/// install writes for it are built with (so they have the same compression and filters).
fn family_options(name: &str, cache: &rocksdb::Cache) -> Options {
    let mut cf = Options::default();
    cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
    if STATE_FAMILIES.contains(&name) {
        // Most state reads are point lookups, many of them for keys that are not there (a
        // request id seen for the first time): bloom filters in the memtable and in every
        // table file answer those without walking the skip list or reading blocks. Profiling
        // the leader showed the memtable skip list as its top cost.
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        table.set_block_cache(cache);
        cf.set_block_based_table_factory(&table);
        // A memtable bloom costs a tenth of the write buffer (6.4 MiB) in every active
        // memtable, counted against the one cap on write memory (`DB_WRITE_BUFFER_BYTES`).
        // Families that are only appended to and read by range, or rarely read, go without:
        // with one, the two HIS indexes pushed the cap over and RocksDB flushed tiny memtables
        // all the time (anchor mix 3,054 → 1,450–1,904 requests/s).
        if !NO_MEMTABLE_BLOOM_FAMILIES.contains(&name) {
            cf.set_memtable_whole_key_filtering(true);
            cf.set_memtable_prefix_bloom_ratio(0.1);
        }
    }
    cf
}

impl Store {
    /// Opens (or creates) the database at `path` with every family.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with_cache(path, DEFAULT_BLOCK_CACHE_BYTES)
    }

    /// [`Store::open`] with `block_cache_bytes` of memory for the state's table blocks.
    pub fn open_with_cache(path: &Path, block_cache_bytes: u64) -> Result<Store> {
        std::fs::create_dir_all(path)?;
        // Table files of a snapshot install a crash interrupted while staging (no marker:
        // the install starts over when the leader sends the snapshot again).
        let _ = std::fs::remove_dir_all(crate::snapshot::staging_dir(path));
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_max_background_jobs(2);
        // One cap on the memtables of every family together: without it each of the 17
        // families may hold two 64 MiB memtables, and a snapshot install (which writes every
        // family at once) grew the node by 350 MiB on a 740 MiB snapshot. With it the memory
        // of writes is bounded whatever the state's size (`yinyi snapshot-probe`).
        options.set_db_write_buffer_size(DB_WRITE_BUFFER_BYTES);
        let cache = rocksdb::Cache::new_lru_cache(block_cache_bytes as usize);
        let families = ALL_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, family_options(name, &cache)));
        let db = DB::open_cf_descriptors(&options, path, families)?;
        let store = Store {
            db,
            path: path.to_path_buf(),
            gate: RwLock::new(()),
            cache,
        };
        store.key_requests_by_terminal()?;
        store.build_indexes()?;
        Ok(store)
    }

    /// Requests were once recorded by request id alone; they are now each terminal's own
    /// (`request_key`). A database of the earlier layout is rewritten on its first open, in
    /// batches (a key without `/` is an old one: neither ids nor terminals contain `/`, so a
    /// crash half way simply goes on at the next open), its audit index with it, and then marked
    /// done so later opens do not walk the family again. Every node rewrites the same records
    /// the same way, so their digests stay equal. Without it a retry of a request made just
    /// before the upgrade would not be found and would be applied again.
    fn key_requests_by_terminal(&self) -> Result<()> {
        const BATCH_RECORDS: usize = 10_000;
        let meta = self.cf(CF_SM_META);
        if self.db.get_cf(meta, SM_REQUESTS_BY_TERMINAL)?.is_some() {
            return Ok(());
        }
        let mut moved = 0u64;
        let mut batch = WriteBatch::default();
        let mut in_batch = 0;
        for item in self
            .db
            .iterator_cf(self.cf(CF_REQUESTS), IteratorMode::Start)
        {
            let (key, value) = item?;
            if key.contains(&b'/') {
                continue;
            }
            let record: l::RequestRecord = codec::decode(&value)?;
            let id = std::str::from_utf8(&key)
                .map_err(|_| StorageError::Corrupt("a request id is not UTF-8".into()))?;
            let new_key = request_key(record.terminal.as_str(), id);
            batch.delete_cf(self.cf(CF_REQUESTS), &key);
            batch.put_cf(self.cf(CF_REQUESTS), &new_key, &value);
            if record.body.is_sensitive() {
                let old_audit = audit_key(record.at.0, &key);
                if let Some(mark) = self.db.get_cf(self.cf(CF_AUDIT), &old_audit)? {
                    batch.delete_cf(self.cf(CF_AUDIT), &old_audit);
                    batch.put_cf(self.cf(CF_AUDIT), audit_key(record.at.0, &new_key), mark);
                }
            }
            moved += 1;
            in_batch += 1;
            if in_batch == BATCH_RECORDS {
                self.write(std::mem::take(&mut batch), true)?;
                in_batch = 0;
            }
        }
        batch.put_cf(meta, SM_REQUESTS_BY_TERMINAL, [1u8]);
        self.write(batch, true)?;
        if moved > 0 {
            tracing::info!(moved, "request records re-keyed by terminal");
        }
        Ok(())
    }

    /// `request_expiry`, `bank_ops_open` and `report_days` came with this release: what was
    /// written before is indexed on the first open (one walk of `requests`, `bank_ops` and
    /// `reports`, in batches), then marked done. Every node indexes the same records the same
    /// way, so digests stay equal; a crash half way writes the same keys again next time.
    fn build_indexes(&self) -> Result<()> {
        const BATCH_RECORDS: usize = 10_000;
        let meta = self.cf(CF_SM_META);
        if self.db.get_cf(meta, SM_INDEXES_BUILT)?.is_some() {
            return Ok(());
        }
        let unit = codec::encode(&())?;
        let mut indexed = 0u64;
        let mut batch = WriteBatch::default();
        let mut index = |batch: &mut WriteBatch, family: &str, key: Vec<u8>| -> Result<()> {
            batch.put_cf(self.cf(family), key, &unit);
            indexed += 1;
            if batch.len() >= BATCH_RECORDS {
                self.write(std::mem::take(batch), true)?;
            }
            Ok(())
        };
        for item in self
            .db
            .iterator_cf(self.cf(CF_REQUESTS), IteratorMode::Start)
        {
            let (key, value) = item?;
            let record: l::RequestRecord = codec::decode(&value)?;
            if !record.body.is_sensitive() {
                index(&mut batch, CF_REQUEST_EXPIRY, audit_key(record.at.0, &key))?;
            }
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_BANK_OPS), IteratorMode::Start)
        {
            let (key, value) = item?;
            let op: l::BankOp = codec::decode(&value)?;
            if is_open(op.state) {
                index(&mut batch, CF_BANK_OPS_OPEN, key.into_vec())?;
            }
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_REPORTS), IteratorMode::Start)
        {
            let (_, value) = item?;
            let report: l::Report = codec::decode(&value)?;
            if let Some(day) = report_day(&report) {
                index(
                    &mut batch,
                    CF_REPORT_DAYS,
                    report_day_key(&day, &report.key()),
                )?;
            }
        }
        batch.put_cf(meta, SM_INDEXES_BUILT, [1u8]);
        self.write(batch, true)?;
        if indexed > 0 {
            tracing::info!(indexed, "records of an earlier release indexed");
        }
        Ok(())
    }

    /// When the oldest request record a prune may let go of was made (ms), if there is one:
    /// one seek, so the leader proposes a prune only when one is due.
    pub fn oldest_expiring_request(&self) -> Result<Option<i64>> {
        let _reading = self.reading();
        let mut iter = self
            .db
            .iterator_cf(self.cf(CF_REQUEST_EXPIRY), IteratorMode::Start);
        match iter.next() {
            Some(item) => {
                let (key, _) = item?;
                let time: [u8; 8] = key
                    .get(..8)
                    .and_then(|t| t.try_into().ok())
                    .ok_or_else(|| StorageError::Corrupt("short request_expiry key".into()))?;
                Ok(Some(u64::from_be_bytes(time) as i64))
            }
            None => Ok(None),
        }
    }

    /// The bank operations still PENDING or IN_DOUBT, and holds AUTHORIZED (through their index: the cost follows
    /// what is open now, not every operation ever made).
    pub fn open_bank_ops(&self) -> Result<Vec<l::BankOp>> {
        let _reading = self.reading();
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_BANK_OPS_OPEN), IteratorMode::Start)
        {
            let (key, _) = item?;
            match self.get_ungated::<l::BankOp>(CF_BANK_OPS, &key)? {
                Some(op) => out.push(op),
                None => {
                    return Err(StorageError::Corrupt(format!(
                        "bank_ops_open names unknown operation {}",
                        String::from_utf8_lossy(&key)
                    )));
                }
            }
        }
        Ok(out)
    }

    /// The reports of business day `day` (`YYYY-MM-DD`): shifts closed and collections counted
    /// that day and the terminals' day lines, read through `report_days` and the `day/` keys.
    pub fn reports_of_day(&self, day: &str) -> Result<Vec<l::Report>> {
        let _reading = self.reading();
        let mut out = Vec::new();
        let prefix = report_day_key(day, "");
        for item in self.db.iterator_cf(
            self.cf(CF_REPORT_DAYS),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (key, _) = item?;
            let Some(report_key) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            match self.get_ungated::<l::Report>(CF_REPORTS, report_key)? {
                Some(report) => out.push(report),
                None => {
                    return Err(StorageError::Corrupt(format!(
                        "report_days names unknown report {}",
                        String::from_utf8_lossy(report_key)
                    )));
                }
            }
        }
        let prefix = format!("day/{day}/").into_bytes();
        for item in self.db.iterator_cf(
            self.cf(CF_REPORTS),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            out.push(codec::decode(&value)?);
        }
        Ok(out)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Held while reading the state (see `gate`).
    pub(crate) fn reading(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Held while the state is replaced by a snapshot.
    pub(crate) fn installing(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The options of family `name` (see [`family_options`]).
    pub(crate) fn options_of(&self, name: &str) -> Options {
        family_options(name, &self.cache)
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every family is created at open")
    }

    pub(crate) fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    // ---- the Raft log ----

    /// Writes log entries to the WAL without syncing; [`Store::sync_wal`] makes them durable.
    pub fn append_log<I>(&self, entries: I) -> Result<()>
    where
        I: IntoIterator<Item = (u64, Vec<u8>)>,
    {
        let cf = self.cf(CF_RAFT_LOG);
        let mut batch = WriteBatch::default();
        for (index, bytes) in entries {
            batch.put_cf(cf, log_key(index), bytes);
        }
        self.write(batch, false)
    }

    /// Syncs the WAL: every write before this call is durable when it returns.
    pub fn sync_wal(&self) -> Result<()> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// About how many bytes the Raft log from index `from` on takes in the database's files
    /// (compressed, so less than it was written as; what is only in the memtable is not
    /// counted).
    pub fn log_bytes_on_disk(&self, from: u64) -> u64 {
        let (from, to) = (log_key(from), log_key(u64::MAX));
        let range = rocksdb::Range::new(&from[..], &to[..]);
        self.db
            .get_approximate_sizes_cf(self.cf(CF_RAFT_LOG), &[range])
            .first()
            .copied()
            .unwrap_or(0)
    }

    /// Log entries with `start <= index < end`, in order.
    pub fn log_range(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        let from = log_key(start);
        let iter = self.db.iterator_cf(
            self.cf(CF_RAFT_LOG),
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            let index = log_index(&key);
            if index >= end {
                break;
            }
            out.push((index, value.into_vec()));
        }
        Ok(out)
    }

    /// The last log entry, if any.
    pub fn last_log(&self) -> Result<Option<(u64, Vec<u8>)>> {
        let mut iter = self.db.iterator_cf(self.cf(CF_RAFT_LOG), IteratorMode::End);
        match iter.next() {
            Some(item) => {
                let (key, value) = item?;
                Ok(Some((log_index(&key), value.into_vec())))
            }
            None => Ok(None),
        }
    }

    /// Deletes log entries from `since` on (a conflicting suffix), durably.
    pub fn truncate_log(&self, since: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_RAFT_LOG), log_key(since), log_key(u64::MAX));
        batch.delete_cf(self.cf(CF_RAFT_LOG), log_key(u64::MAX));
        self.write(batch, true)
    }

    /// Deletes log entries up to and including `upto` and records the last purged log id.
    pub fn purge_log(&self, upto: u64, last_purged: Vec<u8>) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_RAFT_META), META_LAST_PURGED, last_purged);
        batch.delete_range_cf(self.cf(CF_RAFT_LOG), log_key(0), log_key(upto + 1));
        self.write(batch, true)
    }

    pub fn raft_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_RAFT_META), key)?)
    }

    /// Writes a Raft record (vote, committed); `sync` when it must survive power loss at once.
    pub fn put_raft_meta(&self, key: &[u8], value: Vec<u8>, sync: bool) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_RAFT_META), key, value);
        self.write(batch, sync)
    }

    pub fn sm_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let _reading = self.reading();
        Ok(self.db.get_cf(self.cf(CF_SM_META), key)?)
    }

    // ---- the state ----

    /// A view for applying commands: reads see the database and this view's own writes.
    pub fn view(&self) -> RocksView<'_> {
        RocksView {
            store: self,
            overlay: BTreeMap::new(),
        }
    }

    /// Writes everything `view` staged and the state machine's meta in one atomic batch. Not
    /// synced: the log is durable, and a node that loses this write re-applies from its last
    /// applied log id, which is in the same batch.
    pub fn commit_view(&self, view: RocksView<'_>, sm_meta: &[(&[u8], Vec<u8>)]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for ((family, key), value) in view.overlay {
            match value {
                Some(value) => batch.put_cf(self.cf(family), key, value),
                None => batch.delete_cf(self.cf(family), key),
            }
        }
        for (key, value) in sm_meta {
            batch.put_cf(self.cf(CF_SM_META), key, value);
        }
        self.write(batch, false)
    }

    /// A typed read of one state record.
    pub fn get<T: DeserializeOwned>(&self, family: &str, key: &[u8]) -> Result<Option<T>> {
        let _reading = self.reading();
        self.get_ungated(family, key)
    }

    /// HIS's bill feed: the events after transaction `after` (from the start when `None`),
    /// oldest first, at most `limit`.
    pub fn bill_feed(&self, after: Option<l::TxnId>, limit: usize) -> Result<Vec<l::BillEvent>> {
        let _reading = self.reading();
        let from = after.map_or(0, |txn| txn.0.saturating_add(1));
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_BILL_FEED),
            IteratorMode::From(&from.to_be_bytes(), Direction::Forward),
        ) {
            if out.len() >= limit {
                break;
            }
            let (_, value) = item?;
            out.push(codec::decode(&value)?);
        }
        Ok(out)
    }

    /// The bills paid on business day `day` (`YYYYMMDD`), by bill id: what HIS's
    /// reconciliation compares its list with.
    pub fn paid_on_day(&self, day: &str) -> Result<Vec<l::BillEvent>> {
        let prefix = paid_by_day_key(day, "");
        self.scan_prefix(CF_PAID_BY_DAY, &prefix, usize::MAX)
    }

    /// The business rules an admin set, if any (the defaults apply until then).
    pub fn rules(&self) -> Result<Option<l::Rules>> {
        self.get(CF_SETTINGS, SETTINGS_RULES)
    }

    /// An inpatient episode by its admission id.
    pub fn episode(&self, id: &l::AdmissionId) -> Result<Option<l::Episode>> {
        self.get(CF_EPISODES, &episode_key(id.as_str()))
    }

    /// The episodes not yet discharged, of one ward or of every ward, by ward and admission id:
    /// the reminder list and the deposits held per ward read these, not every episode ever.
    pub fn open_episodes(&self, ward: Option<&l::WardId>) -> Result<Vec<l::Episode>> {
        let prefix = open_episode_key(ward.map_or("", |w| w.as_str()), "");
        let mut episodes = self.episodes_under(&prefix)?;
        // One discharged between reading the index and its record is no longer open.
        episodes.retain(|e| e.status != l::EpisodeStatus::Discharged);
        Ok(episodes)
    }

    /// The episodes discharged on business day `day` (`YYYYMMDD`), by admission id.
    pub fn discharged_on(&self, day: &str) -> Result<Vec<l::Episode>> {
        self.episodes_under(&discharged_episode_key(day, ""))
    }

    /// The episodes an index of the `episodes` family names under `prefix` (the id is the
    /// key's last part).
    fn episodes_under(&self, prefix: &[u8]) -> Result<Vec<l::Episode>> {
        let _reading = self.reading();
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_EPISODES),
            IteratorMode::From(prefix, Direction::Forward),
        ) {
            let (key, _) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            let id = key.rsplit(|b| *b == b'/').next().unwrap_or_default();
            let id = std::str::from_utf8(id).unwrap_or_default();
            if let Some(episode) = self.get_ungated(CF_EPISODES, &episode_key(id))? {
                out.push(episode);
            }
        }
        Ok(out)
    }

    /// The split of an insured bill.
    pub fn insured_bill(&self, bill: &l::BillId) -> Result<Option<l::InsuredBill>> {
        self.get(CF_INSURANCE, &insured_bill_key(bill.as_str()))
    }

    /// One business day's list for 医保对账 (`day` `YYYYMMDD`), read from one RocksDB snapshot:
    /// the insured bills settled that day and those reversed that day, each list by bill id
    /// from after its cursor (`""`: from the start), at most `limit` lines each with its bill,
    /// and the splits of the whole day's lists for their totals. It reads one day's index, not
    /// every insured bill.
    pub fn insurance_day(
        &self,
        day: &str,
        settled_after: &str,
        reversed_after: &str,
        limit: usize,
    ) -> Result<InsuranceDay> {
        let _reading = self.reading();
        let snapshot = self.db.snapshot();
        let mut lists = [
            (false, settled_after, InsuranceList::default()),
            (true, reversed_after, InsuranceList::default()),
        ];
        for (reversed, after, list) in &mut lists {
            let prefix = insurance_day_key(day, *reversed, "");
            for item in snapshot.iterator_cf(
                self.cf(CF_INSURANCE),
                IteratorMode::From(&prefix, Direction::Forward),
            ) {
                let (key, _) = item?;
                let Some(bill) = key.strip_prefix(prefix.as_slice()) else {
                    break;
                };
                let bill = std::str::from_utf8(bill).unwrap_or_default();
                let Some(bytes) = snapshot.get_cf(self.cf(CF_INSURANCE), insured_bill_key(bill))?
                else {
                    continue;
                };
                let insured: l::InsuredBill = codec::decode(&bytes)?;
                list.splits.push(insured.split.clone());
                if bill <= *after {
                    continue;
                }
                if list.lines.len() == limit {
                    list.more = true;
                    continue;
                }
                let record = match snapshot.get_cf(self.cf(CF_BILLS), bill.as_bytes())? {
                    Some(bytes) => Some(decode_bill(&bytes)?),
                    None => None,
                };
                list.lines.push((insured, record));
            }
        }
        let [(_, _, settled), (_, _, reversed)] = lists;
        Ok(InsuranceDay { settled, reversed })
    }

    /// A bill, whichever layout it was stored in ([`decode_bill`]).
    pub fn bill(&self, id: &l::BillId) -> Result<Option<l::Bill>> {
        let _reading = self.reading();
        match self
            .db
            .get_pinned_cf(self.cf(CF_BILLS), id.as_str().as_bytes())?
        {
            Some(bytes) => Ok(Some(decode_bill(&bytes)?)),
            None => Ok(None),
        }
    }

    /// [`Store::get`] for a caller that already holds `reading`.
    fn get_ungated<T: DeserializeOwned>(&self, family: &str, key: &[u8]) -> Result<Option<T>> {
        match self.db.get_pinned_cf(self.cf(family), key)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Typed records of `family` whose keys start with `prefix`, in key order, at most `limit`.
    pub fn scan_prefix<T: DeserializeOwned>(
        &self,
        family: &str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<T>> {
        let _reading = self.reading();
        let iter = self.db.iterator_cf(
            self.cf(family),
            IteratorMode::From(prefix, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push(codec::decode(&value)?);
        }
        Ok(out)
    }

    /// Typed records of `family` whose keys start with `prefix` and sort before `before` (all
    /// of them when `None`), newest-key first, at most `limit`.
    pub fn scan_prefix_rev<T: DeserializeOwned>(
        &self,
        family: &str,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<T>> {
        let _reading = self.reading();
        let mut read = rocksdb::ReadOptions::default();
        read.set_iterate_lower_bound(prefix.to_vec());
        let upper = match before {
            Some(key) => key.to_vec(),
            None => prefix_successor(prefix),
        };
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(family), read);
        if upper.is_empty() {
            iter.seek_to_last();
        } else {
            iter.seek_for_prev(&upper);
            // seek_for_prev lands on `upper` itself when it exists; it is excluded.
            if iter.valid() && iter.key() == Some(upper.as_slice()) {
                iter.prev();
            }
        }
        let mut out = Vec::new();
        while iter.valid() && out.len() < limit {
            match (iter.key(), iter.value()) {
                (Some(key), Some(value)) if key.starts_with(prefix) => {
                    out.push(codec::decode(value)?)
                }
                _ => break,
            }
            iter.prev();
        }
        iter.status()?;
        Ok(out)
    }

    /// Counts the keys of a family (for status and tests; walks the family).
    pub fn count(&self, family: &str) -> Result<u64> {
        let _reading = self.reading();
        let mut n = 0;
        for item in self.db.iterator_cf(self.cf(family), IteratorMode::Start) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// The audit trail: sensitive requests recorded at or after `since_ms`, oldest first, at
    /// most `limit`, each with its id and record (who, where, what, when, outcome).
    pub fn audit_trail(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<(String, l::RequestRecord)>> {
        let _reading = self.reading();
        let start = audit_key(since_ms, b"");
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_AUDIT),
            IteratorMode::From(&start, Direction::Forward),
        ) {
            if out.len() >= limit {
                break;
            }
            let (key, _) = item?;
            let request_key = key.get(8..).unwrap_or_default();
            // The record names its terminal; the id is what follows the terminal's `/`.
            let id = request_key
                .iter()
                .position(|&b| b == b'/')
                .map_or(request_key, |slash| &request_key[slash + 1..]);
            let id = String::from_utf8_lossy(id).into_owned();
            match self.get_ungated::<l::RequestRecord>(CF_REQUESTS, request_key)? {
                Some(record) => out.push((id, record)),
                None => {
                    return Err(StorageError::Corrupt(format!(
                        "audit names unknown request {id}"
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Accounts last active before `before_ms`: how many, their total balance, and the first
    /// `limit` of them in account order.
    pub fn dormant_accounts(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<(u64, l::Money, Vec<l::Account>)> {
        let _reading = self.reading();
        let snapshot = self.db.snapshot();
        let mut count = 0u64;
        let mut total = l::Money::ZERO;
        let mut listed = Vec::new();
        for item in snapshot.iterator_cf(self.cf(CF_ACCOUNTS), IteratorMode::Start) {
            let (_, value) = item?;
            let account: l::Account = codec::decode(&value)?;
            if account.last_activity_at.0 < before_ms {
                count += 1;
                total = total
                    .checked_add(account.balance)
                    .ok_or_else(|| StorageError::Corrupt("balances overflow".into()))?;
                if listed.len() < limit {
                    listed.push(account);
                }
            }
        }
        Ok((count, total, listed))
    }

    /// Whether RocksDB has flushes or compactions running or pending (work a big write leaves
    /// behind it: `yinyi snapshot-probe` waits for it to count an install's whole cost).
    pub fn background_work_pending(&self) -> bool {
        let db_wide = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        db_wide("rocksdb.num-running-compactions") > 0
            || db_wide("rocksdb.num-running-flushes") > 0
            || ALL_FAMILIES.iter().any(|family| {
                [
                    "rocksdb.compaction-pending",
                    "rocksdb.mem-table-flush-pending",
                ]
                .iter()
                .any(|name| {
                    self.db
                        .property_int_value_cf(self.cf(family), *name)
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                        > 0
                })
            })
    }

    /// Bytes of SST files and of memtables, by column family (RocksDB's own estimates).
    pub fn sizes(&self) -> Vec<(&'static str, u64, u64)> {
        ALL_FAMILIES
            .iter()
            .map(|family| {
                let property = |name: &str| {
                    self.db
                        .property_int_value_cf(self.cf(family), name)
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                };
                (
                    *family,
                    property("rocksdb.total-sst-files-size"),
                    property("rocksdb.cur-size-all-mem-tables"),
                )
            })
            .collect()
    }

    /// A hash over every state family in key order: two nodes that applied the same log agree
    /// on it byte for byte.
    pub fn digest(&self) -> Result<String> {
        self.digest_of(&STATE_FAMILIES)
    }

    /// Whether a digest taken by an earlier release (which knew fewer state families, each new
    /// one added last) is this state's: the digest of the first families, when every family
    /// after them is empty. A backup of an earlier release restores and verifies so.
    pub fn matches_digest(&self, digest: &str) -> Result<bool> {
        for known in (1..=STATE_FAMILIES.len()).rev() {
            if self.digest_of(&STATE_FAMILIES[..known])? == digest {
                return Ok(true);
            }
            let family = STATE_FAMILIES[known - 1];
            let _reading = self.reading();
            if self
                .db
                .iterator_cf(self.cf(family), IteratorMode::Start)
                .next()
                .is_some()
            {
                return Ok(false);
            }
        }
        Ok(false)
    }

    fn digest_of(&self, families: &[&str]) -> Result<String> {
        let _reading = self.reading();
        let snapshot = self.db.snapshot();
        let mut hasher = Sha256::new();
        for family in families {
            hasher.update(family.as_bytes());
            for item in snapshot.iterator_cf(self.cf(family), IteratorMode::Start) {
                let (key, value) = item?;
                hasher.update((key.len() as u64).to_be_bytes());
                hasher.update(&key);
                hasher.update((value.len() as u64).to_be_bytes());
                hasher.update(&value);
            }
        }
        Ok(hex::encode(hasher.finalize()))
    }

    /// The balance audit (稽核) over one consistent snapshot of the state: every account with its
    /// journal, streamed in key order (memory stays flat), then every bank operation.
    pub fn audit(&self) -> Result<l::AuditReport> {
        let _reading = self.reading();
        let snapshot = self.db.snapshot();
        let mut audit = l::Audit::new();
        let mut journal = snapshot
            .iterator_cf(self.cf(CF_JOURNAL), IteratorMode::Start)
            .peekable();
        let mut entries: Vec<l::JournalEntry> = Vec::new();
        for item in snapshot.iterator_cf(self.cf(CF_ACCOUNTS), IteratorMode::Start) {
            let (key, value) = item?;
            let account: l::Account = codec::decode(&value)?;
            entries.clear();
            while let Some(next) = journal.peek() {
                let (entry_key, entry_value) = match next {
                    Ok(kv) => kv,
                    Err(_) => {
                        journal.next().transpose()?;
                        continue;
                    }
                };
                match entry_key.get(..key.len()).map(|p| p.cmp(&key[..])) {
                    Some(std::cmp::Ordering::Equal) => {
                        entries.push(codec::decode(entry_value)?);
                        journal.next();
                    }
                    Some(std::cmp::Ordering::Less) | None => {
                        audit.orphan_entry(&codec::decode(entry_value)?);
                        journal.next();
                    }
                    Some(std::cmp::Ordering::Greater) => break,
                }
            }
            audit.account(&account, &entries);
        }
        for item in journal {
            let (_, value) = item?;
            audit.orphan_entry(&codec::decode(&value)?);
        }
        for item in snapshot.iterator_cf(self.cf(CF_BANK_OPS), IteratorMode::Start) {
            let (_, value) = item?;
            audit.bank_op(&codec::decode(&value)?);
        }
        let records = episode_key("");
        for item in snapshot.iterator_cf(
            self.cf(CF_EPISODES),
            IteratorMode::From(&records, Direction::Forward),
        ) {
            let (key, value) = item?;
            if !key.starts_with(&records) {
                break;
            }
            audit.episode(&codec::decode(&value)?);
        }
        Ok(audit.finish())
    }

    /// A consistent copy of the whole database (log and state) in `dir`, for backups: hard
    /// links to the immutable table files where it can, copies otherwise.
    pub fn checkpoint(&self, dir: &Path) -> Result<()> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// Makes a restored copy the start of a new cluster: no log (everything up to
    /// `last_purged`, the state's last applied entry, counts as purged), `vote` in place of the
    /// old one (the term must not go below the purged entry's, or the new cluster's entries
    /// would sort below it), and the new cluster's membership as the state machine's. One
    /// synced batch.
    pub fn reset_raft(
        &self,
        last_purged: Option<Vec<u8>>,
        vote: Option<Vec<u8>>,
        membership: Vec<u8>,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_RAFT_LOG), log_key(0), log_key(u64::MAX));
        batch.delete_cf(self.cf(CF_RAFT_LOG), log_key(u64::MAX));
        match vote {
            Some(vote) => batch.put_cf(self.cf(CF_RAFT_META), META_VOTE, vote),
            None => batch.delete_cf(self.cf(CF_RAFT_META), META_VOTE),
        }
        batch.delete_cf(self.cf(CF_RAFT_META), META_COMMITTED);
        match last_purged {
            Some(log_id) => batch.put_cf(self.cf(CF_RAFT_META), META_LAST_PURGED, log_id),
            None => batch.delete_cf(self.cf(CF_RAFT_META), META_LAST_PURGED),
        }
        batch.put_cf(self.cf(CF_SM_META), SM_MEMBERSHIP, membership);
        self.write(batch, true)
    }
}

/// A bank operation the saga still has to settle.
/// In the `bank_ops_open` index: unresolved, or an authorization held (its saga releases it
/// when the payer asks or it expires).
fn is_open(state: l::BankOpState) -> bool {
    state.is_unresolved() || state == l::BankOpState::Authorized
}

/// The business day a shift or collection report belongs to (the day it was closed or
/// counted); other reports carry their day in their key.
fn report_day(report: &l::Report) -> Option<String> {
    match report {
        l::Report::Shift(r) => Some(l::BusinessDay::of_ms(r.closed_at.0).to_string()),
        l::Report::Collection(r) => Some(l::BusinessDay::of_ms(r.at.0).to_string()),
        l::Report::Reconciliation(_)
        | l::Report::TerminalDay(_)
        | l::Report::HisReconciliation(_) => None,
    }
}

/// A `StateView` over the store: reads fall through an overlay of this batch's writes.
pub struct RocksView<'s> {
    store: &'s Store,
    /// Staged writes: a value, or `None` for a delete.
    overlay: BTreeMap<(&'static str, Vec<u8>), Option<Vec<u8>>>,
}

impl RocksView<'_> {
    fn read<T: DeserializeOwned>(&self, family: &'static str, key: &[u8]) -> Option<T> {
        let bytes = self.bytes(family, key)?;
        // A value we cannot decode means the disk is corrupt; applying on would write wrong
        // balances, so the node stops here.
        Some(codec::decode(&bytes).expect("corrupt state value"))
    }

    fn bytes(&self, family: &'static str, key: &[u8]) -> Option<Vec<u8>> {
        let staged = self.overlay.get(&(family, key.to_vec()));
        let bytes = match staged {
            Some(Some(bytes)) => bytes.clone(),
            Some(None) => return None,
            None => {
                let _reading = self.store.reading();
                self.store
                    .db
                    .get_cf(self.store.cf(family), key)
                    .expect("state read failed: the node cannot apply without its disk")?
            }
        };
        Some(bytes)
    }

    fn write<T: Serialize>(&mut self, family: &'static str, key: Vec<u8>, value: &T) {
        let bytes = codec::encode(value).expect("state values always encode");
        self.overlay.insert((family, key), Some(bytes));
    }

    fn delete(&mut self, family: &'static str, key: Vec<u8>) {
        self.overlay.insert((family, key), None);
    }

    /// Writes staged so far (for batching limits).
    pub fn staged_writes(&self) -> usize {
        self.overlay.len()
    }
}

use yinyi_ledger as l;

/// Decodes a stored bill. Bills written before partial refunds lack their last five fields
/// (`Bill::from_first_layout` reads those); a bill is rewritten in today's layout the next
/// time a command changes it. Both layouts decode strictly (a value of one is never taken for
/// the other: the shorter ends early, the longer leaves bytes over), so every node reads the
/// same bill from the same bytes, and a database, snapshot or backup of the earlier release
/// opens without a rewrite.
pub fn decode_bill(bytes: &[u8]) -> std::result::Result<l::Bill, codec::CodecError> {
    codec::decode::<l::Bill>(bytes).or_else(|today| {
        codec::decode::<l::BillFirstLayout>(bytes)
            .map(l::Bill::from_first_layout)
            .map_err(|_| today)
    })
}

impl l::StateView for RocksView<'_> {
    fn account(&self, id: l::AccountId) -> Option<l::Account> {
        self.read(CF_ACCOUNTS, &account_key(id))
    }
    fn card(&self, no: &l::CardNo) -> Option<l::Card> {
        self.read(CF_CARDS, no.as_str().as_bytes())
    }
    fn person(&self, person: &l::PersonKey) -> Option<l::AccountId> {
        self.read(CF_PERSONS, person.as_str().as_bytes())
    }
    fn bill(&self, id: &l::BillId) -> Option<l::Bill> {
        let bytes = self.bytes(CF_BILLS, id.as_str().as_bytes())?;
        Some(decode_bill(&bytes).expect("corrupt state value"))
    }
    fn bank_op(&self, bank_ref: &l::BankRef) -> Option<l::BankOp> {
        self.read(CF_BANK_OPS, bank_ref.as_str().as_bytes())
    }
    fn terminal(&self, id: &l::TerminalId) -> Option<l::Terminal> {
        self.read(CF_TERMINALS, id.as_str().as_bytes())
    }
    fn report(&self, key: &str) -> Option<l::Report> {
        self.read(CF_REPORTS, key.as_bytes())
    }
    fn episode(&self, id: &l::AdmissionId) -> Option<l::Episode> {
        self.read(CF_EPISODES, &episode_key(id.as_str()))
    }
    fn rules(&self) -> Option<l::Rules> {
        self.read(CF_SETTINGS, SETTINGS_RULES)
    }
    fn insured_bill(&self, bill: &l::BillId) -> Option<l::InsuredBill> {
        self.read(CF_INSURANCE, &insured_bill_key(bill.as_str()))
    }
    fn bill_of_settlement(&self, settlement: &l::InsuranceSettlementId) -> Option<l::BillId> {
        self.read(CF_INSURANCE, &settlement_key(settlement.as_str()))
    }
    fn request(&self, terminal: &l::TerminalId, id: &l::RequestId) -> Option<l::RequestRecord> {
        self.read(CF_REQUESTS, &request_key(terminal.as_str(), id.as_str()))
    }
    fn credential(&self, id: &str) -> Option<l::Credential> {
        self.read(CF_CREDENTIALS, id.as_bytes())
    }
    fn expired_requests(
        &self,
        before: l::Timestamp,
        limit: usize,
    ) -> Vec<(l::TerminalId, l::RequestId)> {
        let upper = audit_key(before.0, b"");
        // The database's keys below `upper`, less those this view deleted, and this view's
        // own (a long catch-up applies hours of commands in one view), merged in key order.
        let staged: BTreeMap<&[u8], bool> = self
            .overlay
            .range((CF_REQUEST_EXPIRY, Vec::new())..(CF_REQUEST_EXPIRY, upper.clone()))
            .map(|((_, key), value)| (key.as_slice(), value.is_some()))
            .collect();
        let mut keys: Vec<Vec<u8>> = staged
            .iter()
            .filter(|(_, live)| **live)
            .map(|(key, _)| key.to_vec())
            .collect();
        {
            let _reading = self.store.reading();
            let mut read = rocksdb::ReadOptions::default();
            read.set_iterate_upper_bound(upper.clone());
            let mut iter = self
                .store
                .db
                .raw_iterator_cf_opt(self.store.cf(CF_REQUEST_EXPIRY), read);
            iter.seek_to_first();
            let mut taken = 0;
            while iter.valid() && taken < limit {
                let key = iter.key().expect("a valid iterator has a key");
                if !staged.contains_key(key) {
                    keys.push(key.to_vec());
                    taken += 1;
                }
                iter.next();
            }
            iter.status()
                .expect("state read failed: the node cannot apply without its disk");
        }
        keys.sort();
        keys.truncate(limit);
        keys.iter()
            .map(|key| {
                let request_key = String::from_utf8_lossy(&key[8..]).into_owned();
                let (terminal, id) = request_key
                    .split_once('/')
                    .expect("corrupt request_expiry key");
                (
                    l::TerminalId::parse(terminal).expect("corrupt request_expiry terminal"),
                    l::RequestId::parse(id).expect("corrupt request_expiry id"),
                )
            })
            .collect()
    }

    fn put_account(&mut self, account: l::Account) {
        self.write(CF_ACCOUNTS, account_key(account.id).to_vec(), &account);
    }
    fn put_card(&mut self, card: l::Card) {
        self.write(CF_CARDS, card.no.as_str().as_bytes().to_vec(), &card);
    }
    fn put_person(&mut self, person: l::PersonKey, account: l::AccountId) {
        self.write(CF_PERSONS, person.as_str().as_bytes().to_vec(), &account);
    }
    fn put_bill(&mut self, bill: l::Bill) {
        self.write(CF_BILLS, bill.id.as_str().as_bytes().to_vec(), &bill);
    }
    fn put_bank_op(&mut self, op: l::BankOp) {
        let key = op.bank_ref.as_str().as_bytes().to_vec();
        if is_open(op.state) {
            self.write(CF_BANK_OPS_OPEN, key, &());
        } else {
            self.delete(CF_BANK_OPS_OPEN, key);
        }
        self.write(CF_BANK_OPS, op.bank_ref.as_str().as_bytes().to_vec(), &op);
    }
    fn put_terminal(&mut self, terminal: l::Terminal) {
        self.write(
            CF_TERMINALS,
            terminal.id.as_str().as_bytes().to_vec(),
            &terminal,
        );
    }
    fn put_request(&mut self, id: l::RequestId, record: l::RequestRecord) {
        let key = request_key(record.terminal.as_str(), id.as_str());
        if record.body.is_sensitive() {
            self.write(CF_AUDIT, audit_key(record.at.0, &key), &());
        } else {
            self.write(CF_REQUEST_EXPIRY, audit_key(record.at.0, &key), &());
        }
        self.write(CF_REQUESTS, key, &record);
    }
    fn forget_request(&mut self, terminal: &l::TerminalId, id: &l::RequestId) {
        let key = request_key(terminal.as_str(), id.as_str());
        if let Some(record) = self.read::<l::RequestRecord>(CF_REQUESTS, &key)
            && !record.body.is_sensitive()
        {
            self.delete(CF_REQUEST_EXPIRY, audit_key(record.at.0, &key));
            self.delete(CF_REQUESTS, key);
        }
    }
    fn append_journal(&mut self, entry: l::JournalEntry) {
        self.write(
            CF_JOURNAL,
            journal_key(entry.account, entry.txn).to_vec(),
            &entry,
        );
    }
    fn put_report(&mut self, report: l::Report) {
        if let Some(day) = report_day(&report) {
            self.write(CF_REPORT_DAYS, report_day_key(&day, &report.key()), &());
        }
        self.write(CF_REPORTS, report.key().into_bytes(), &report);
    }
    fn put_credential(&mut self, credential: l::Credential) {
        self.write(
            CF_CREDENTIALS,
            credential.id.as_bytes().to_vec(),
            &credential,
        );
    }
    fn put_rules(&mut self, rules: l::Rules) {
        self.write(CF_SETTINGS, SETTINGS_RULES.to_vec(), &rules);
    }
    fn put_insured_bill(&mut self, insured: l::InsuredBill) {
        let bill = insured.bill.as_str();
        let posted = l::BusinessDay::of_ms(insured.posted_at.0).compact();
        self.write(CF_INSURANCE, insurance_day_key(&posted, false, bill), &());
        self.write(
            CF_INSURANCE,
            settlement_key(insured.split.settlement.as_str()),
            &insured.bill,
        );
        if let Some(at) = insured.reversed_at {
            let reversed = l::BusinessDay::of_ms(at.0).compact();
            self.write(CF_INSURANCE, insurance_day_key(&reversed, true, bill), &());
        }
        self.write(CF_INSURANCE, insured_bill_key(bill), &insured);
    }
    fn put_episode(&mut self, episode: l::Episode) {
        let id = episode.id.as_str();
        let open = open_episode_key(episode.ward.as_str(), id);
        match (episode.status, episode.discharged_at) {
            (l::EpisodeStatus::Discharged, Some(at)) => {
                self.delete(CF_EPISODES, open);
                let day = l::BusinessDay::of_ms(at.0).compact();
                self.write(CF_EPISODES, discharged_episode_key(&day, id), &());
            }
            _ => self.write(CF_EPISODES, open, &()),
        }
        self.write(CF_EPISODES, episode_key(id), &episode);
    }
    fn append_bill_event(&mut self, event: l::BillEvent) {
        if event.kind == l::BillEventKind::Paid {
            let day = l::BusinessDay::of_ms(event.at.0).compact();
            self.write(
                CF_PAID_BY_DAY,
                paid_by_day_key(&day, event.bill.as_str()),
                &event,
            );
        }
        self.write(
            CF_BILL_FEED,
            bill_event_key(event.txn.0, event.bill.as_str()),
            &event,
        );
    }
}

/// The smallest key above every key that starts with `prefix` (empty: no such bound).
fn prefix_successor(prefix: &[u8]) -> Vec<u8> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < 0xFF {
            next.push(last + 1);
            return next;
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use yinyi_ledger::StateView;

    /// A bill written by the release before partial refunds (seven fields) is read with its
    /// refund state taken from its status, by `apply` and by the API alike, and a value of
    /// neither layout is still an error.
    #[test]
    fn bills_of_the_first_layout_are_read_as_today() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = l::BillFirstLayout {
            id: l::BillId::parse("OP-1").unwrap(),
            account: l::AccountId(7),
            kind: l::BillKind::Outpatient,
            amount: l::Money::from_yuan(30),
            status: l::BillStatus::Cancelled,
            payment: None,
            pending_op: None,
            posted_at: l::Timestamp(1),
        };
        store
            .db
            .put_cf(store.cf(CF_BILLS), b"OP-1", codec::encode(&old).unwrap())
            .unwrap();
        let expected = l::Bill::from_first_layout(old.clone());
        assert_eq!(expected.refundable(), l::Money::from_yuan(30));
        let id = &old.id;
        assert_eq!(store.view().bill(id).as_ref(), Some(&expected));
        assert_eq!(store.bill(id).unwrap().as_ref(), Some(&expected));
        // Today's layout round-trips through the same reads.
        let mut today = expected.clone();
        today.invoiced = true;
        store
            .db
            .put_cf(store.cf(CF_BILLS), b"OP-1", codec::encode(&today).unwrap())
            .unwrap();
        assert_eq!(store.bill(id).unwrap(), Some(today));
        // Neither layout: an error, not a guess.
        store
            .db
            .put_cf(store.cf(CF_BILLS), b"OP-1", codec::encode(&7u8).unwrap())
            .unwrap();
        assert!(store.bill(id).is_err());
    }

    /// A digest taken by a release that knew fewer state families still verifies the state
    /// while the newer families are empty, and no longer once one holds anything.
    #[test]
    fn an_earlier_release_digest_verifies_while_the_new_families_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut view = store.view();
        view.put_rules(l::Rules::default());
        store.commit_view(view, &[]).unwrap();
        let earlier = store.digest_of(&STATE_FAMILIES[..16]).unwrap();
        assert!(store.matches_digest(&store.digest().unwrap()).unwrap());
        // The rules are in the newest family: a 16-family digest no longer describes it.
        assert!(!store.matches_digest(&earlier).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let empty = Store::open(dir.path()).unwrap();
        let earlier = empty.digest_of(&STATE_FAMILIES[..16]).unwrap();
        assert_ne!(earlier, empty.digest().unwrap());
        assert!(empty.matches_digest(&earlier).unwrap());
        assert!(!empty.matches_digest("0").unwrap());
    }

    /// The episodes' indexes follow each episode: open ones by ward until discharge, then by
    /// the day of discharge only.
    #[test]
    fn episode_indexes_follow_admission_and_discharge() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let episode = |id: &str, ward: &str| l::Episode {
            id: l::AdmissionId::parse(id).unwrap(),
            account: l::AccountId(7),
            ward: l::WardId::parse(ward).unwrap(),
            reminder_below: l::Money::from_yuan(1_000),
            status: l::EpisodeStatus::Open,
            deposits: Vec::new(),
            deposited: l::Money::ZERO,
            charges: l::Money::ZERO,
            charge_posts: 0,
            final_amount: None,
            refunded: l::Money::ZERO,
            refunding: l::Money::ZERO,
            deposits_in_flight: 0,
            opened_at: l::Timestamp(1),
            discharged_at: None,
        };
        let write = |e: l::Episode| {
            let mut view = store.view();
            view.put_episode(e);
            store.commit_view(view, &[]).unwrap();
        };
        write(episode("ZY-1", "W5"));
        write(episode("ZY-2", "W5"));
        write(episode("ZY-3", "W50"));
        let ids = |v: Vec<l::Episode>| v.into_iter().map(|e| e.id.to_string()).collect::<Vec<_>>();
        let w5 = l::WardId::parse("W5").unwrap();
        assert_eq!(
            ids(store.open_episodes(Some(&w5)).unwrap()),
            ["ZY-1", "ZY-2"]
        );
        assert_eq!(
            ids(store.open_episodes(None).unwrap()),
            ["ZY-1", "ZY-2", "ZY-3"]
        );
        // 2026-11-26 12:00 China Standard Time.
        let noon = 1_795_665_600_000;
        let mut done = episode("ZY-2", "W5");
        done.status = l::EpisodeStatus::Discharged;
        done.final_amount = Some(l::Money::ZERO);
        done.discharged_at = Some(l::Timestamp(noon));
        write(done.clone());
        assert_eq!(ids(store.open_episodes(Some(&w5)).unwrap()), ["ZY-1"]);
        assert_eq!(ids(store.discharged_on("20261126").unwrap()), ["ZY-2"]);
        assert!(store.discharged_on("20261125").unwrap().is_empty());
        assert_eq!(store.episode(&done.id).unwrap(), Some(done));
    }

    /// A database of the layout before request ids became each terminal's own: on its first
    /// open the records (and their audit entries) are found under terminal and id, so a retry
    /// of a request made before the upgrade is answered, not applied again.
    #[test]
    fn request_records_of_the_earlier_layout_are_rekeyed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let record = |body: l::CommandBody| l::RequestRecord {
            terminal: l::TerminalId::parse("W-03").unwrap(),
            operator: None,
            body,
            outcome: l::Outcome::rejected(l::ReasonCode::CardNotFound, "no card"),
            at: l::Timestamp(1_700_000_000_000),
        };
        let card = l::CardNo::parse("HC0001").unwrap();
        let sensitive = record(l::CommandBody::WithdrawCash {
            card: card.clone(),
            amount: None,
        });
        let plain = record(l::CommandBody::DepositCash {
            card,
            amount: l::Money::from_yuan(1),
        });
        {
            let store = Store::open(dir.path()).unwrap();
            // Written as the earlier version wrote them, and no mark of the new layout.
            let requests = store.cf(CF_REQUESTS);
            store
                .db
                .put_cf(requests, b"W-03:1", codec::encode(&sensitive).unwrap())
                .unwrap();
            store
                .db
                .put_cf(requests, b"W-03:2", codec::encode(&plain).unwrap())
                .unwrap();
            store
                .db
                .put_cf(
                    store.cf(CF_AUDIT),
                    audit_key(sensitive.at.0, b"W-03:1"),
                    codec::encode(&()).unwrap(),
                )
                .unwrap();
            store
                .db
                .delete_cf(store.cf(CF_SM_META), SM_REQUESTS_BY_TERMINAL)
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let terminal = l::TerminalId::parse("W-03").unwrap();
        let view = store.view();
        for (id, record) in [("W-03:1", &sensitive), ("W-03:2", &plain)] {
            let found = view.request(&terminal, &l::RequestId::parse(id).unwrap());
            assert_eq!(found.as_ref(), Some(record), "{id}");
        }
        assert!(
            store
                .get::<l::RequestRecord>(CF_REQUESTS, b"W-03:1")
                .unwrap()
                .is_none()
        );
        let trail = store.audit_trail(0, 10).unwrap();
        assert_eq!(trail.len(), 1);
        assert_eq!(trail[0].0, "W-03:1");
        // Marked: a second open does not walk the family again (and finds nothing to move).
        assert!(store.sm_meta(SM_REQUESTS_BY_TERMINAL).unwrap().is_some());
    }
}
