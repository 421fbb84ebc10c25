//! Snapshots as a stream of frames, so that neither building, sending nor installing one holds
//! the state in memory, whatever its size.
//!
//! A snapshot file is [`PACKED_MAGIC`] and then a sequence of frames, each the `u32` big-endian
//! length of its compressed bytes, the `u32` big-endian length of the encoded [`Frame`], and the
//! encoded frame compressed with LZ4 (files of earlier releases have no magic and frames of a
//! length and the encoded frame; they are still read). The frames are records of the state
//! families in key order, at most [`FRAME_BYTES`] of them per frame, and one `End` frame last
//! with the number of records and a SHA-256 over every encoded records frame. A file that is
//! cut short, altered, padded or out of key order is refused by [`Store::install_snapshot_file`]
//! before anything of the current state is touched: it reads the file once into RocksDB table
//! files beside the database, and only a whole, checked file gets further.
//!
//! Installing is atomic across a crash: a marker goes into the Raft meta family (synced), the
//! state families are cleared and the table files ingested into them, and the marker is removed
//! in a synced write. A node that restarts with the marker still there finishes the install
//! from the same file ([`Store::unfinished_install`]) before it serves anything. Readers of the
//! store wait while the tables are ingested (`Store::reading`), so they see the old state or
//! the new, never a mix.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamily, FlushOptions, IngestExternalFileOptions, IteratorMode, Options};
use rocksdb::{SstFileWriter, WriteBatch};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::keys::*;
use crate::store::{Result, StorageError, Store};

/// Raw bytes of records per table file a snapshot install writes (RocksDB compresses them).
const TABLE_FILE_BYTES: u64 = 128 * 1024 * 1024;

/// Records are gathered into frames of about this many bytes (memory per frame, both ways).
pub const FRAME_BYTES: usize = 1024 * 1024;

/// The longest frame a reader accepts (a frame holds whole records, so it can pass
/// `FRAME_BYTES` by one record).
const MAX_FRAME_BYTES: u32 = 64 * 1024 * 1024;

/// Above every key we write: the end of a range delete over a whole family.
const KEY_CEILING: [u8; 80] = [0xFF; 80];

/// The Raft meta key of an install under way: what the consensus layer needs to finish it.
const META_INSTALLING: &[u8] = b"installing_snapshot";

/// One key and value of a state family.
#[derive(Serialize, Deserialize)]
struct SnapshotRecord {
    family: u8,
    key: Vec<u8>,
    value: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
enum Frame {
    Records(Vec<SnapshotRecord>),
    End { records: u64, sha256: Vec<u8> },
}

/// What [`Store::export_snapshot`] wrote: the state's last applied log id and membership (as
/// the state machine encoded them) as of the same RocksDB snapshot, and the file's size.
pub struct ExportedSnapshot {
    pub last_applied: Option<Vec<u8>>,
    pub membership: Option<Vec<u8>>,
    pub records: u64,
    pub bytes: u64,
}

/// The first bytes of a snapshot file whose frames are LZ4-compressed. A file without them is
/// of an earlier release (frames as they are): still read, never written.
const PACKED_MAGIC: &[u8; 8] = b"YSNAPLZ4";

/// Writes `frame` packed: `u32` big-endian length of the compressed bytes, `u32` big-endian
/// length of the encoded frame, then the encoded frame compressed with LZ4 (a snapshot shrinks
/// about four times: less to write, send and keep). The digest is over the encoded frame.
fn write_frame(out: &mut impl Write, frame: &Frame, hasher: Option<&mut Sha256>) -> Result<u64> {
    let bytes = codec::encode(frame)?;
    let too_long = || StorageError::Corrupt(format!("frame of {} bytes", bytes.len()));
    let raw = u32::try_from(bytes.len())
        .ok()
        .filter(|&len| len <= MAX_FRAME_BYTES)
        .ok_or_else(too_long)?;
    let packed = lz4_flex::block::compress(&bytes);
    let len = u32::try_from(packed.len())
        .ok()
        .filter(|&len| len <= MAX_FRAME_BYTES)
        .ok_or_else(too_long)?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(&raw.to_be_bytes())?;
    out.write_all(&packed)?;
    if let Some(hasher) = hasher {
        hasher.update(&bytes);
    }
    Ok(8 + packed.len() as u64)
}

/// The table files a snapshot file was written into ([`Store::stage_snapshot_file`]), by
/// family position, in a directory of their own that goes when this does.
pub struct StagedSnapshot {
    dir: PathBuf,
    files: Vec<Vec<PathBuf>>,
    records: u64,
}

/// Where the table files of an install are written: beside the database directory (same
/// filesystem, so ingesting them is a link). A crash while staging leaves it; the next open
/// removes it.
pub(crate) fn staging_dir(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_owned();
    name.push(".installing");
    db.with_file_name(name)
}

impl Drop for StagedSnapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The table file being written: one family's records in key order.
struct Table<'a> {
    family: usize,
    path: PathBuf,
    writer: SstFileWriter<'a>,
    bytes: u64,
}

impl<'a> Table<'a> {
    fn open(
        options: &'a [Options],
        family: usize,
        staged: &mut StagedSnapshot,
    ) -> Result<Table<'a>> {
        let path = staged
            .dir
            .join(format!("{:06}.sst", staged.files.iter().flatten().count()));
        let writer = SstFileWriter::create(&options[family]);
        writer.open(&path)?;
        Ok(Table {
            family,
            path,
            writer,
            bytes: 0,
        })
    }

    fn finish(mut self, staged: &mut StagedSnapshot) -> Result<()> {
        self.writer.finish()?;
        staged.files[self.family].push(self.path);
        Ok(())
    }
}

/// Reads the frames of a snapshot file one at a time.
struct FrameReader {
    input: BufReader<File>,
    /// Frames are LZ4-compressed (the file starts with [`PACKED_MAGIC`]).
    packed: bool,
    /// The last frame's encoded bytes, and its compressed bytes.
    buf: Vec<u8>,
    packed_buf: Vec<u8>,
}

impl FrameReader {
    fn open(path: &Path) -> Result<FrameReader> {
        let mut input = BufReader::with_capacity(256 * 1024, File::open(path)?);
        let packed = input.fill_buf()?.starts_with(PACKED_MAGIC);
        if packed {
            input.consume(PACKED_MAGIC.len());
        }
        Ok(FrameReader {
            input,
            packed,
            buf: Vec::new(),
            packed_buf: Vec::new(),
        })
    }

    /// A frame's length field, or `None` at the end of the file (a part of one is an error).
    fn length(&mut self) -> Result<Option<u32>> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < len.len() {
            match self.input.read(&mut len[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => {
                    return Err(StorageError::Corrupt(
                        "snapshot file cut short in a frame's length".into(),
                    ));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(u32::from_be_bytes(len)))
    }

    /// Reads `len` bytes into `buf` (a frame is never longer than [`MAX_FRAME_BYTES`]).
    fn read_into(input: &mut BufReader<File>, buf: &mut Vec<u8>, len: u32) -> Result<()> {
        if len > MAX_FRAME_BYTES {
            return Err(StorageError::Corrupt(format!(
                "snapshot frame of {len} bytes"
            )));
        }
        buf.resize(len as usize, 0);
        input
            .read_exact(buf)
            .map_err(|e| StorageError::Corrupt(format!("snapshot file cut short in a frame: {e}")))
    }

    /// The next frame, or `None` at the end of the file.
    fn next(&mut self) -> Result<Option<Frame>> {
        let Some(len) = self.length()? else {
            return Ok(None);
        };
        if self.packed {
            let raw = self.length()?.ok_or_else(|| {
                StorageError::Corrupt("snapshot file cut short in a frame".into())
            })?;
            if raw > MAX_FRAME_BYTES {
                return Err(StorageError::Corrupt(format!(
                    "snapshot frame of {raw} bytes"
                )));
            }
            Self::read_into(&mut self.input, &mut self.packed_buf, len)?;
            self.buf.resize(raw as usize, 0);
            let unpacked = lz4_flex::block::decompress_into(&self.packed_buf, &mut self.buf)
                .map_err(|e| StorageError::Corrupt(format!("snapshot frame: {e}")))?;
            if unpacked != raw as usize {
                return Err(StorageError::Corrupt(format!(
                    "snapshot frame of {unpacked} bytes, {raw} announced"
                )));
            }
        } else {
            Self::read_into(&mut self.input, &mut self.buf, len)?;
        }
        Ok(Some(codec::decode(&self.buf)?))
    }

    /// The encoded bytes of the frame [`FrameReader::next`] returned last.
    fn last_bytes(&self) -> &[u8] {
        &self.buf
    }
}

impl Store {
    /// Writes the state families, read from one RocksDB snapshot, to `out` as frames. Memory
    /// stays at about one frame.
    pub fn export_snapshot(&self, out: &mut impl Write) -> Result<ExportedSnapshot> {
        self.export_snapshot_in_frames(out, FRAME_BYTES)
    }

    /// [`Store::export_snapshot`] with frames of `frame_bytes` (tests make many small ones).
    #[doc(hidden)]
    pub fn export_snapshot_in_frames(
        &self,
        out: &mut impl Write,
        frame_bytes_max: usize,
    ) -> Result<ExportedSnapshot> {
        let _reading = self.reading();
        let snapshot = self.db.snapshot();
        let mut out = BufWriter::with_capacity(256 * 1024, out);
        out.write_all(PACKED_MAGIC)?;
        let mut hasher = Sha256::new();
        let mut frame = Vec::new();
        let mut frame_bytes = 0usize;
        let mut records = 0u64;
        let mut bytes = PACKED_MAGIC.len() as u64;
        for (family_index, family) in SNAPSHOT_FAMILIES.iter().enumerate() {
            for item in snapshot.iterator_cf(self.cf(family), IteratorMode::Start) {
                let (key, value) = item?;
                frame_bytes += key.len() + value.len() + 8;
                frame.push(SnapshotRecord {
                    family: family_index as u8,
                    key: key.into_vec(),
                    value: value.into_vec(),
                });
                records += 1;
                if frame_bytes >= frame_bytes_max {
                    let full = Frame::Records(std::mem::take(&mut frame));
                    bytes += write_frame(&mut out, &full, Some(&mut hasher))?;
                    frame_bytes = 0;
                }
            }
        }
        if !frame.is_empty() {
            bytes += write_frame(&mut out, &Frame::Records(frame), Some(&mut hasher))?;
        }
        let end = Frame::End {
            records,
            sha256: hasher.finalize().to_vec(),
        };
        bytes += write_frame(&mut out, &end, None)?;
        out.flush()?;
        let meta = self.cf(CF_SM_META);
        Ok(ExportedSnapshot {
            last_applied: snapshot.get_cf(meta, SM_LAST_APPLIED)?,
            membership: snapshot.get_cf(meta, SM_MEMBERSHIP)?,
            records,
            bytes,
        })
    }

    /// Replaces the state with the snapshot file at `path`: [`Store::stage_snapshot_file`],
    /// then [`Store::install_staged`]. Returns the number of records.
    pub fn install_snapshot_file(&self, path: &Path, marker: &[u8]) -> Result<u64> {
        let staged = self.stage_snapshot_file(path)?;
        self.install_tables(staged, marker, None)
    }

    /// Reads the snapshot file at `path` once, checked end to end (every frame decodes, records
    /// in key order, the `End` frame last with the right count and digest) while it is written
    /// into RocksDB table files in a directory beside the database. Nothing of the current
    /// state is touched: a file that does not check out is refused with nothing left behind.
    /// This is the long part of an install (it reads, decompresses and writes the whole state);
    /// it may run at a low priority.
    pub fn stage_snapshot_file(&self, path: &Path) -> Result<StagedSnapshot> {
        self.stage(path, TABLE_FILE_BYTES)
    }

    /// Replaces the state with a staged snapshot, under a crash marker holding `marker` (what
    /// the caller needs to finish the install after a restart, see
    /// [`Store::unfinished_install`]): the state families are cleared and the table files
    /// ingested into them (no WAL, memtable or flush of the records; on a new node they go
    /// straight to the last level), and the marker is removed in a synced write. Readers wait
    /// only meanwhile. Should it fail half way, readers wait until the process ends: the state
    /// is half replaced, and the next start finishes the install from the file.
    pub fn install_staged(&self, staged: StagedSnapshot, marker: &[u8]) -> Result<u64> {
        self.install_tables(staged, marker, None)
    }

    /// Installs the table files of the first `families` families of the file and stops there,
    /// as a crash would (for tests of the crash marker).
    #[doc(hidden)]
    pub fn install_snapshot_file_cut_after(
        &self,
        path: &Path,
        marker: &[u8],
        families: usize,
    ) -> Result<u64> {
        let staged = self.stage_snapshot_file(path)?;
        self.install_tables(staged, marker, Some(families))
    }

    fn install_tables(
        &self,
        staged: StagedSnapshot,
        marker: &[u8],
        cut_after: Option<usize>,
    ) -> Result<u64> {
        // Looked at before readers are held off: nothing applies while a snapshot installs.
        // A family with nothing in it (a new node's) gets no range delete, so the files
        // ingested into it go to the last level instead of over a tombstone; the others are
        // flushed now, so that the flush an ingest needs over a range delete is of the
        // tombstones alone.
        let occupied: Vec<&str> = SNAPSHOT_FAMILIES
            .into_iter()
            .filter(|family| {
                let cf = self.cf(family);
                self.db
                    .iterator_cf(cf, IteratorMode::Start)
                    .next()
                    .is_some()
            })
            .collect();
        let cfs: Vec<&ColumnFamily> = occupied.iter().map(|family| self.cf(family)).collect();
        if !cfs.is_empty() {
            self.db.flush_cfs_opt(&cfs, &FlushOptions::default())?;
        }
        let gate = self.installing();
        let replaced = self.replace_state(&staged, &cfs, marker, cut_after);
        if replaced.is_err() {
            // Half replaced: nobody reads it, and the next start finishes the install.
            std::mem::forget(gate);
        }
        replaced.map(|()| staged.records)
    }

    fn replace_state(
        &self,
        staged: &StagedSnapshot,
        occupied: &[&ColumnFamily],
        marker: &[u8],
        cut_after: Option<usize>,
    ) -> Result<()> {
        self.put_raft_meta(META_INSTALLING, marker.to_vec(), true)?;
        if !occupied.is_empty() {
            let mut clear = WriteBatch::default();
            for cf in occupied {
                clear.delete_range_cf(*cf, &[][..], &KEY_CEILING[..]);
            }
            self.write(clear, false)?;
            self.db.flush_cfs_opt(occupied, &FlushOptions::default())?;
        }
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        for (position, files) in staged.files.iter().enumerate() {
            if cut_after == Some(position) {
                return Err(StorageError::Corrupt("install cut short (test)".into()));
            }
            if !files.is_empty() {
                let cf = self.cf(SNAPSHOT_FAMILIES[position]);
                self.db
                    .ingest_external_file_cf_opts(cf, &ingest, files.clone())?;
            }
        }
        let mut done = WriteBatch::default();
        done.delete_cf(self.cf(CF_RAFT_META), META_INSTALLING);
        self.write(done, true)
    }

    /// [`Store::stage_snapshot_file`] with table files of about `table_bytes` (of records
    /// before compression) each.
    fn stage(&self, path: &Path, table_bytes: u64) -> Result<StagedSnapshot> {
        let dir = staging_dir(self.path());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut staged = StagedSnapshot {
            dir,
            files: vec![Vec::new(); SNAPSHOT_FAMILIES.len()],
            records: 0,
        };
        let options: Vec<Options> = SNAPSHOT_FAMILIES
            .iter()
            .map(|family| self.options_of(family))
            .collect();
        let mut table: Option<Table> = None;
        let mut last: Option<(usize, Vec<u8>)> = None;
        let mut reader = FrameReader::open(path)?;
        let mut hasher = Sha256::new();
        while let Some(frame) = reader.next()? {
            let records = match frame {
                Frame::Records(records) => records,
                Frame::End { records, sha256 } => {
                    if reader.next()?.is_some() {
                        return Err(StorageError::Corrupt("frames after the end".into()));
                    }
                    if records != staged.records || sha256 != hasher.finalize().as_slice() {
                        return Err(StorageError::Corrupt(format!(
                            "snapshot file does not match its end frame ({} records read, \
                             {records} announced, or its digest differs)",
                            staged.records
                        )));
                    }
                    if let Some(table) = table.take() {
                        table.finish(&mut staged)?;
                    }
                    return Ok(staged);
                }
            };
            hasher.update(reader.last_bytes());
            for record in records {
                let family = record.family as usize;
                if family >= SNAPSHOT_FAMILIES.len() {
                    return Err(StorageError::Corrupt(format!(
                        "snapshot record of family {family}"
                    )));
                }
                if let Some((last_family, last_key)) = &last
                    && (*last_family, last_key.as_slice()) >= (family, record.key.as_slice())
                {
                    return Err(StorageError::Corrupt(
                        "snapshot records out of key order".into(),
                    ));
                }
                if let Some(full) = table.take_if(|t| t.family != family || t.bytes >= table_bytes)
                {
                    full.finish(&mut staged)?;
                }
                let open = match table.as_mut() {
                    Some(open) => open,
                    None => table.insert(Table::open(&options, family, &mut staged)?),
                };
                open.writer.put(&record.key, &record.value)?;
                open.bytes += (record.key.len() + record.value.len()) as u64;
                staged.records += 1;
                last = Some((family, record.key));
            }
        }
        Err(StorageError::Corrupt(
            "snapshot file has no end frame (cut short)".into(),
        ))
    }

    /// The marker of an install a crash interrupted, if any: the state is half replaced and
    /// must not be served until the install is run again.
    pub fn unfinished_install(&self) -> Result<Option<Vec<u8>>> {
        self.raft_meta(META_INSTALLING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with `n` raw records in each of three state families.
    fn filled(dir: &Path, n: u32) -> Store {
        let store = Store::open(dir).unwrap();
        let mut batch = WriteBatch::default();
        for family in [CF_ACCOUNTS, CF_JOURNAL, CF_REQUESTS] {
            for i in 0..n {
                batch.put_cf(store.cf(family), i.to_be_bytes(), vec![7u8; 100]);
            }
        }
        store.write(batch, true).unwrap();
        store
    }

    /// A snapshot file of `records` in this order, with a correct end frame; its frames
    /// compressed, or as an earlier release wrote them.
    fn file_of(path: &Path, records: Vec<SnapshotRecord>, packed: bool) {
        let mut out = File::create(path).unwrap();
        if packed {
            out.write_all(PACKED_MAGIC).unwrap();
        }
        let mut hasher = Sha256::new();
        let count = records.len() as u64;
        let mut write = |frame: &Frame, hasher: Option<&mut Sha256>| {
            if packed {
                write_frame(&mut out, frame, hasher).unwrap();
            } else {
                let bytes = codec::encode(frame).unwrap();
                out.write_all(&(bytes.len() as u32).to_be_bytes()).unwrap();
                out.write_all(&bytes).unwrap();
                if let Some(hasher) = hasher {
                    hasher.update(&bytes);
                }
            }
        };
        write(&Frame::Records(records), Some(&mut hasher));
        let end = Frame::End {
            records: count,
            sha256: hasher.finalize().to_vec(),
        };
        write(&end, None);
    }

    #[test]
    fn a_snapshot_file_of_an_earlier_release_uncompressed_still_installs() {
        let a = tempfile::tempdir().unwrap();
        let target = filled(&a.path().join("db"), 10);
        let accounts = SNAPSHOT_FAMILIES.iter().position(|f| *f == CF_ACCOUNTS);
        let records = (0..50u32)
            .map(|i| SnapshotRecord {
                family: accounts.unwrap() as u8,
                key: i.to_be_bytes().to_vec(),
                value: vec![3; 40],
            })
            .collect();
        let file = a.path().join("old");
        file_of(&file, records, false);
        assert!(!std::fs::read(&file).unwrap().starts_with(PACKED_MAGIC));
        assert_eq!(target.install_snapshot_file(&file, b"m").unwrap(), 50);
        let accounts = target
            .db
            .iterator_cf(target.cf(CF_ACCOUNTS), IteratorMode::Start);
        assert_eq!(accounts.count(), 50);
        let journal = target
            .db
            .iterator_cf(target.cf(CF_JOURNAL), IteratorMode::Start);
        assert_eq!(
            journal.count(),
            0,
            "the old state stays beside the snapshot"
        );
    }

    #[test]
    fn a_few_bytes_after_the_end_frame_are_refused() {
        let a = tempfile::tempdir().unwrap();
        let target = filled(&a.path().join("db"), 10);
        let before = target.digest().unwrap();
        let file = a.path().join("snap");
        target
            .export_snapshot(&mut File::create(&file).unwrap())
            .unwrap();
        let good = std::fs::read(&file).unwrap();
        for extra in 1..4 {
            let mut padded = good.clone();
            padded.extend(std::iter::repeat_n(0u8, extra));
            std::fs::write(&file, &padded).unwrap();
            let refused = target.install_snapshot_file(&file, b"m").unwrap_err();
            assert!(
                refused.to_string().contains("cut short"),
                "{extra}: {refused}"
            );
            assert_eq!(target.digest().unwrap(), before);
        }
    }

    #[test]
    fn table_files_a_crash_left_while_staging_are_removed_at_open() {
        let a = tempfile::tempdir().unwrap();
        let db = a.path().join("db");
        let staging = staging_dir(&db);
        assert_eq!(staging, a.path().join("db.installing"));
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("000000.sst"), b"half a table").unwrap();
        let _store = Store::open(&db).unwrap();
        assert!(!staging.exists());
        assert_eq!(staging_dir(&a.path().join("db/")), staging);
    }

    #[test]
    fn an_export_is_compressed() {
        let a = tempfile::tempdir().unwrap();
        let source = filled(&a.path().join("db"), 5_000);
        let file = a.path().join("snap");
        let exported = source
            .export_snapshot(&mut File::create(&file).unwrap())
            .unwrap();
        let raw: u64 = 3 * 5_000 * (4 + 100);
        assert!(std::fs::read(&file).unwrap().starts_with(PACKED_MAGIC));
        assert!(
            exported.bytes * 4 < raw,
            "{} bytes for {raw} of records",
            exported.bytes
        );
    }

    #[test]
    fn a_family_larger_than_a_table_file_is_staged_in_several_and_installs_whole() {
        let a = tempfile::tempdir().unwrap();
        let source = filled(&a.path().join("db"), 2_000);
        let file = a.path().join("snap");
        source
            .export_snapshot_in_frames(&mut File::create(&file).unwrap(), 4096)
            .unwrap();
        let b = tempfile::tempdir().unwrap();
        let target = Store::open(&b.path().join("db")).unwrap();
        let staged = target.stage(&file, 50_000).unwrap();
        let journal = SNAPSHOT_FAMILIES.iter().position(|f| *f == CF_JOURNAL);
        assert!(
            staged.files[journal.unwrap()].len() >= 4,
            "{:?}",
            staged.files
        );
        let dir = staged.dir.clone();
        drop(staged);
        assert!(!dir.exists(), "the staging directory stays");
        target.install_snapshot_file(&file, b"m").unwrap();
        assert_eq!(target.digest().unwrap(), source.digest().unwrap());
    }

    #[test]
    fn records_out_of_key_order_are_refused_with_the_state_untouched() {
        let a = tempfile::tempdir().unwrap();
        let target = filled(&a.path().join("db"), 10);
        let before = target.digest().unwrap();
        let record = |family: usize, key: &[u8]| SnapshotRecord {
            family: family as u8,
            key: key.to_vec(),
            value: vec![1],
        };
        let accounts = SNAPSHOT_FAMILIES.iter().position(|f| *f == CF_ACCOUNTS);
        let journal = SNAPSHOT_FAMILIES.iter().position(|f| *f == CF_JOURNAL);
        let (accounts, journal) = (accounts.unwrap(), journal.unwrap());
        for (what, records) in [
            (
                "keys backwards",
                vec![record(accounts, b"b"), record(accounts, b"a")],
            ),
            (
                "a key twice",
                vec![record(accounts, b"a"), record(accounts, b"a")],
            ),
            (
                "a family again",
                vec![
                    record(accounts, b"a"),
                    record(journal, b"a"),
                    record(accounts, b"b"),
                ],
            ),
        ] {
            let file = a.path().join("bad");
            file_of(&file, records, true);
            let refused = target.install_snapshot_file(&file, b"m").unwrap_err();
            assert!(
                refused.to_string().contains("out of key order"),
                "{what}: {refused}"
            );
            assert_eq!(target.digest().unwrap(), before, "{what}");
            assert_eq!(target.unfinished_install().unwrap(), None, "{what}");
            assert!(!a.path().join("db.installing").exists(), "{what}");
        }
    }
}
