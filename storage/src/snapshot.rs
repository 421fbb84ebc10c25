//! Snapshots as a stream of frames, so that neither building, sending nor installing one holds
//! the state in memory, whatever its size.
//!
//! A snapshot file is a sequence of frames, each `u32` big-endian length then one encoded
//! [`Frame`]: records of the state families in key order, at most [`FRAME_BYTES`] of them per
//! frame, and one `End` frame last with the number of records and a SHA-256 over every records
//! frame. A file that is cut short, altered or padded fails [`Store::verify_snapshot_file`]
//! before anything of the current state is touched.
//!
//! Installing is atomic across a crash: a marker goes into the Raft meta family (synced), the
//! state families are replaced frame by frame, and the marker is removed in the last, synced
//! batch. A node that restarts with the marker still there finishes the install from the same
//! file ([`Store::unfinished_install`]) before it serves anything. Readers of the store wait
//! while an install runs (`Store::reading`), so they see the old state or the new, never a mix.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::keys::*;
use crate::store::{Result, StorageError, Store};

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

fn write_frame(out: &mut impl Write, frame: &Frame, hasher: Option<&mut Sha256>) -> Result<u64> {
    let bytes = codec::encode(frame)?;
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|&len| len <= MAX_FRAME_BYTES)
        .ok_or_else(|| StorageError::Corrupt(format!("frame of {} bytes", bytes.len())))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(&bytes)?;
    if let Some(hasher) = hasher {
        hasher.update(&bytes);
    }
    Ok(4 + bytes.len() as u64)
}

/// Reads the frames of a snapshot file one at a time.
struct FrameReader {
    input: BufReader<File>,
    buf: Vec<u8>,
}

impl FrameReader {
    fn open(path: &Path) -> Result<FrameReader> {
        Ok(FrameReader {
            input: BufReader::with_capacity(256 * 1024, File::open(path)?),
            buf: Vec::new(),
        })
    }

    /// The next frame and its encoded bytes, or `None` at the end of the file.
    fn next(&mut self) -> Result<Option<Frame>> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes(len);
        if len > MAX_FRAME_BYTES {
            return Err(StorageError::Corrupt(format!(
                "snapshot frame of {len} bytes"
            )));
        }
        self.buf.resize(len as usize, 0);
        self.input.read_exact(&mut self.buf).map_err(|e| {
            StorageError::Corrupt(format!("snapshot file cut short in a frame: {e}"))
        })?;
        Ok(Some(codec::decode(&self.buf)?))
    }

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
        let mut hasher = Sha256::new();
        let mut frame = Vec::new();
        let mut frame_bytes = 0usize;
        let mut records = 0u64;
        let mut bytes = 0u64;
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

    /// Checks a snapshot file end to end (every frame decodes, the `End` frame is last and its
    /// count and digest match) without touching the store; returns its record count.
    pub fn verify_snapshot_file(path: &Path) -> Result<u64> {
        let mut reader = FrameReader::open(path)?;
        let mut hasher = Sha256::new();
        let mut seen = 0u64;
        while let Some(frame) = reader.next()? {
            match frame {
                Frame::Records(records) => {
                    hasher.update(reader.last_bytes());
                    for record in &records {
                        if record.family as usize >= SNAPSHOT_FAMILIES.len() {
                            return Err(StorageError::Corrupt(format!(
                                "snapshot record of family {}",
                                record.family
                            )));
                        }
                    }
                    seen += records.len() as u64;
                }
                Frame::End { records, sha256 } => {
                    if reader.next()?.is_some() {
                        return Err(StorageError::Corrupt("frames after the end".into()));
                    }
                    if records != seen || sha256 != hasher.finalize().as_slice() {
                        return Err(StorageError::Corrupt(format!(
                            "snapshot file does not match its end frame ({seen} records read, \
                             {records} announced, or its digest differs)"
                        )));
                    }
                    return Ok(seen);
                }
            }
        }
        Err(StorageError::Corrupt(
            "snapshot file has no end frame (cut short)".into(),
        ))
    }

    /// Replaces the state with the snapshot file at `path`: verified first, then installed
    /// frame by frame under a crash marker holding `marker` (what the caller needs to finish
    /// the install after a restart, see [`Store::unfinished_install`]). Readers wait until it is
    /// done; the last batch, which removes the marker, is synced.
    pub fn install_snapshot_file(&self, path: &Path, marker: &[u8]) -> Result<u64> {
        self.install_frames(path, marker, None)
    }

    /// Installs the first `frames` frames of the file and stops there, as a crash would (for
    /// tests of the crash marker).
    #[doc(hidden)]
    pub fn install_snapshot_file_cut_after(
        &self,
        path: &Path,
        marker: &[u8],
        frames: usize,
    ) -> Result<u64> {
        self.install_frames(path, marker, Some(frames))
    }

    fn install_frames(&self, path: &Path, marker: &[u8], cut_after: Option<usize>) -> Result<u64> {
        let records = Store::verify_snapshot_file(path)?;
        let _installing = self.installing();
        self.put_raft_meta(META_INSTALLING, marker.to_vec(), true)?;
        let mut batch = WriteBatch::default();
        for family in SNAPSHOT_FAMILIES {
            batch.delete_range_cf(self.cf(family), &[][..], &KEY_CEILING[..]);
        }
        self.write(batch, false)?;
        let mut reader = FrameReader::open(path)?;
        let mut installed = 0usize;
        while let Some(frame) = reader.next()? {
            let Frame::Records(frame) = frame else { break };
            if cut_after == Some(installed) {
                return Err(StorageError::Corrupt("install cut short (test)".into()));
            }
            installed += 1;
            let mut batch = WriteBatch::default();
            for record in frame {
                batch.put_cf(
                    self.cf(SNAPSHOT_FAMILIES[record.family as usize]),
                    record.key,
                    record.value,
                );
            }
            self.write(batch, false)?;
        }
        let mut done = WriteBatch::default();
        done.delete_cf(self.cf(CF_RAFT_META), META_INSTALLING);
        self.write(done, true)?;
        Ok(records)
    }

    /// The marker of an install a crash interrupted, if any: the state is half replaced and
    /// must not be served until the install is run again.
    pub fn unfinished_install(&self) -> Result<Option<Vec<u8>>> {
        self.raft_meta(META_INSTALLING)
    }
}
