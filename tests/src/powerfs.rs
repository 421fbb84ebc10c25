//! `PowerFs`: a FUSE passthrough for a node's data directory that behaves like a disk behind a
//! volatile cache. Written data stays in this process's memory until the file is fsynced or
//! fdatasynced; [`PowerFs::cut_power`] drops every byte not synced, as a power failure drops a
//! machine's page cache (SIGKILL does not: the kernel keeps it). A byte quota
//! ([`PowerFs::set_quota`]) makes a full disk: writes that would grow the files past it fail
//! with ENOSPC, and statfs reports the quota's free space.
//!
//! The model: file data is volatile until synced; metadata (create, rename, unlink, truncate,
//! mkdir, link) goes to the backing directory at once and survives a power cut. Real
//! filesystems can also lose a rename or a create not followed by a directory sync, so this
//! model is kinder than the worst disk, never harsher. Unsynced data is bounded
//! (`MAX_UNSYNCED_BYTES`): beyond it everything is written back, as a kernel under memory
//! pressure would. The mount needs `/dev/fuse` and root (mount(2) directly, no fusermount); it
//! is undone when the `PowerFs` drops (lazily, if a process still holds it).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// The unit of unsynced data.
const PAGE: u64 = 4096;
/// Unsynced bytes held at most per mount; beyond it every file is written back.
const MAX_UNSYNCED_BYTES: u64 = 512 * 1024 * 1024;
/// The kernel asks again every time: sizes change under it when the power is cut.
const TTL: Duration = Duration::ZERO;

/// What the harness sees of a mount's state.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskUsage {
    /// Bytes of every regular file (their sizes as the node sees them).
    pub used: u64,
    /// Bytes written and not synced.
    pub unsynced: u64,
    pub quota: Option<u64>,
}

/// A mounted power-cut filesystem; unmounted on drop.
pub struct PowerFs {
    mountpoint: PathBuf,
    state: Arc<Mutex<State>>,
    session: Option<fuser::BackgroundSession>,
}

impl PowerFs {
    /// Mounts a passthrough of `backing` (created if missing) at `mountpoint` (created if
    /// missing; must be empty).
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<PowerFs> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let backing = backing.canonicalize()?;
        let used = apparent_size(&backing)?;
        let root_ino = std::fs::metadata(&backing)?.ino();
        let state = Arc::new(Mutex::new(State {
            backing,
            root_ino,
            paths: HashMap::from([(INodeNo::ROOT.0, vec![PathBuf::new()])]),
            unsynced: HashMap::new(),
            handles: HashMap::new(),
            next_fh: 1,
            quota: None,
            used,
            unsynced_bytes: 0,
        }));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("yinyi-powerfs".into()),
            fuser::MountOption::RW,
            fuser::MountOption::NoAtime,
        ];
        let session = fuser::spawn_mount(
            PowerFsServer {
                state: state.clone(),
            },
            mountpoint,
            &config,
        )
        .with_context(|| {
            format!(
                "mount the power-cut filesystem at {} (needs /dev/fuse and root)",
                mountpoint.display()
            )
        })?;
        Ok(PowerFs {
            mountpoint: mountpoint.to_path_buf(),
            state,
            session: Some(session),
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The power fails: every byte written and not synced is gone; files are back at their
    /// synced sizes. Kill the processes using the mount first. Returns the bytes lost.
    pub fn cut_power(&self) -> u64 {
        let mut state = self.state();
        let mut lost = 0;
        let inodes: Vec<u64> = state.unsynced.keys().copied().collect();
        for ino in inodes {
            let unsynced = state.unsynced.remove(&ino).expect("listed above");
            lost += unsynced.pages.len() as u64 * PAGE;
            let durable = state.backing_size(ino);
            state.used = state.used.saturating_sub(unsynced.size) + durable;
        }
        state.unsynced_bytes = 0;
        lost
    }

    /// Writes that would grow the files past `bytes` fail with ENOSPC (`None`: no limit).
    pub fn set_quota(&self, bytes: Option<u64>) {
        self.state().quota = bytes;
    }

    /// The disk is full from now on: the quota is what the files hold now.
    pub fn fill(&self) {
        let mut state = self.state();
        state.quota = Some(state.used);
    }

    pub fn usage(&self) -> DiskUsage {
        let state = self.state();
        DiskUsage {
            used: state.used,
            unsynced: state.unsynced_bytes,
            quota: state.quota,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take()
            && session.umount_and_join().is_err()
        {
            // Still in use (a process the harness did not stop): detach it lazily.
            if let Ok(path) = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes()) {
                // SAFETY: a valid NUL-terminated path; umount2 only reads it.
                unsafe {
                    libc::umount2(path.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
    }
}

/// Bytes of the regular files under `dir`.
fn apparent_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += apparent_size(&entry.path())?;
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

/// A file's data not yet synced: whole pages over the backing file's content, and the size the
/// file has with them.
struct Unsynced {
    pages: BTreeMap<u64, Box<[u8]>>,
    size: u64,
}

struct Handle {
    file: File,
    /// Opened O_SYNC or O_DSYNC: every write is durable when it returns.
    sync_writes: bool,
}

struct State {
    backing: PathBuf,
    /// The backing directory's own inode number (it is this filesystem's root, inode 1).
    root_ino: u64,
    /// Every name known for an inode, relative to the backing directory (hard links give
    /// several).
    paths: HashMap<u64, Vec<PathBuf>>,
    unsynced: HashMap<u64, Unsynced>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    quota: Option<u64>,
    used: u64,
    unsynced_bytes: u64,
}

fn errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl State {
    fn ino_of(&self, meta: &std::fs::Metadata) -> u64 {
        if meta.ino() == self.root_ino {
            INodeNo::ROOT.0
        } else {
            // Backing inode numbers start above 1 on every Linux filesystem; shifted by one
            // so none meets the root's 1.
            meta.ino() + 1
        }
    }

    fn path(&self, ino: u64) -> Result<PathBuf, Errno> {
        let relative = self
            .paths
            .get(&ino)
            .and_then(|names| names.first())
            .ok_or(Errno::ENOENT)?;
        Ok(self.backing.join(relative))
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<(PathBuf, PathBuf), Errno> {
        let relative = self
            .paths
            .get(&parent)
            .and_then(|names| names.first())
            .ok_or(Errno::ENOENT)?
            .join(name);
        Ok((self.backing.join(&relative), relative))
    }

    fn remember(&mut self, ino: u64, relative: PathBuf) {
        let names = self.paths.entry(ino).or_default();
        if !names.contains(&relative) {
            names.push(relative);
        }
    }

    fn forget_name(&mut self, relative: &Path) {
        self.paths.retain(|_, names| {
            names.retain(|n| n != relative);
            !names.is_empty()
        });
    }

    fn backing_size(&self, ino: u64) -> u64 {
        self.path(ino)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    fn attr(&self, meta: &std::fs::Metadata) -> FileAttr {
        let ino = self.ino_of(meta);
        let kind = if meta.is_dir() {
            FileType::Directory
        } else if meta.file_type().is_symlink() {
            FileType::Symlink
        } else {
            FileType::RegularFile
        };
        let size = self.unsynced.get(&ino).map_or(meta.len(), |u| u.size);
        let time = |secs: i64, nanos: i64| {
            UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        }
    }

    fn lookup_path(&mut self, full: &Path, relative: PathBuf) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(full).map_err(|e| errno(&e))?;
        let ino = self.ino_of(&meta);
        self.remember(ino, relative);
        Ok(self.attr(&meta))
    }

    fn size_of(&self, ino: u64, file: &File) -> Result<u64, Errno> {
        match self.unsynced.get(&ino) {
            Some(u) => Ok(u.size),
            None => file.metadata().map(|m| m.len()).map_err(|e| errno(&e)),
        }
    }

    fn read(&self, ino: u64, file: &File, offset: u64, len: u32) -> Result<Vec<u8>, Errno> {
        let size = self.size_of(ino, file)?;
        if offset >= size {
            return Ok(Vec::new());
        }
        let end = size.min(offset + len as u64);
        let mut out = vec![0u8; (end - offset) as usize];
        // The backing file first (a short read leaves zeros: a hole past its synced end)...
        let mut done = 0;
        while done < out.len() {
            match file.read_at(&mut out[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(errno(&e)),
            }
        }
        // ...then the unsynced pages over it.
        if let Some(unsynced) = self.unsynced.get(&ino) {
            for (&page, data) in unsynced.pages.range(offset / PAGE..=(end - 1) / PAGE) {
                let page_start = page * PAGE;
                let from = offset.max(page_start);
                let to = end.min(page_start + PAGE);
                out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(
                    &data[(from - page_start) as usize..(to - page_start) as usize],
                );
            }
        }
        Ok(out)
    }

    fn write(&mut self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let handle = self.handles.get(&fh).ok_or(Errno::EBADF)?;
        let size = self.size_of(ino, &handle.file)?;
        let end = offset + data.len() as u64;
        let growth = end.saturating_sub(size);
        if let Some(quota) = self.quota
            && self.used + growth > quota
        {
            return Err(Errno::ENOSPC);
        }
        let file = handle.file.try_clone().map_err(|e| errno(&e))?;
        let sync_writes = handle.sync_writes;
        let mut added = 0;
        let unsynced = self.unsynced.entry(ino).or_insert(Unsynced {
            pages: BTreeMap::new(),
            size,
        });
        let mut at = offset;
        while at < end {
            let page = at / PAGE;
            let page_start = page * PAGE;
            let buffer = match unsynced.pages.entry(page) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let mut fresh = vec![0u8; PAGE as usize].into_boxed_slice();
                    // What the page holds now, unless this write covers all of it.
                    if !(at == page_start && end >= page_start + PAGE) {
                        let _ = file.read_at(&mut fresh, page_start);
                    }
                    added += PAGE;
                    v.insert(fresh)
                }
            };
            let to = end.min(page_start + PAGE);
            buffer[(at - page_start) as usize..(to - page_start) as usize]
                .copy_from_slice(&data[(at - offset) as usize..(to - offset) as usize]);
            at = to;
        }
        unsynced.size = unsynced.size.max(end);
        self.used += growth;
        self.unsynced_bytes += added;
        if sync_writes {
            self.sync(ino, Some(&file))?;
        }
        if self.unsynced_bytes > MAX_UNSYNCED_BYTES {
            let all: Vec<u64> = self.unsynced.keys().copied().collect();
            for ino in all {
                self.sync(ino, None)?;
            }
        }
        Ok(())
    }

    /// Writes `ino`'s unsynced pages to the backing file (through `file` or its path).
    fn sync(&mut self, ino: u64, file: Option<&File>) -> Result<(), Errno> {
        let Some(unsynced) = self.unsynced.remove(&ino) else {
            return Ok(());
        };
        self.unsynced_bytes -= unsynced.pages.len() as u64 * PAGE;
        let opened;
        let file = match file {
            Some(f) => f,
            None => {
                opened = OpenOptions::new()
                    .write(true)
                    .open(self.path(ino)?)
                    .map_err(|e| errno(&e))?;
                &opened
            }
        };
        for (page, data) in &unsynced.pages {
            let start = page * PAGE;
            if start >= unsynced.size {
                continue;
            }
            let len = (unsynced.size - start).min(PAGE) as usize;
            file.write_all_at(&data[..len], start)
                .map_err(|e| errno(&e))?;
        }
        if file.metadata().map_err(|e| errno(&e))?.len() < unsynced.size {
            file.set_len(unsynced.size).map_err(|e| errno(&e))?;
        }
        Ok(())
    }

    /// Sets a file's size at once (a truncate is metadata: it survives a power cut).
    fn truncate(&mut self, ino: u64, file: &File, new_size: u64) -> Result<(), Errno> {
        let old = self.size_of(ino, file)?;
        if let Some(unsynced) = self.unsynced.get_mut(&ino) {
            let keep_pages = new_size.div_ceil(PAGE);
            let dropped = unsynced.pages.split_off(&keep_pages);
            self.unsynced_bytes -= dropped.len() as u64 * PAGE;
            if let Some(last) = unsynced.pages.get_mut(&(new_size / PAGE)) {
                let cut = (new_size % PAGE) as usize;
                last[cut..].fill(0);
            }
            unsynced.size = new_size;
        }
        file.set_len(new_size).map_err(|e| errno(&e))?;
        self.used = self.used - old + new_size;
        Ok(())
    }

    /// Forgets a removed file's space and unsynced data once no name and no handle is left.
    fn released_name(&mut self, ino: u64, meta: &std::fs::Metadata) {
        if meta.is_file() && meta.nlink() <= 1 {
            let size = self.unsynced.get(&ino).map_or(meta.len(), |u| u.size);
            self.used = self.used.saturating_sub(size);
            if let Some(unsynced) = self.unsynced.remove(&ino) {
                self.unsynced_bytes -= unsynced.pages.len() as u64 * PAGE;
            }
        }
    }

    fn open_handle(&mut self, file: File, flags: i32) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        let sync_writes = flags & (libc::O_SYNC | libc::O_DSYNC) != 0;
        self.handles.insert(fh, Handle { file, sync_writes });
        fh
    }
}

fn open_options(flags: i32) -> OpenOptions {
    let mut options = OpenOptions::new();
    // Read and write whatever the caller asked (the kernel holds it to its mode; we are root):
    // a write into a page must read the rest of the page first.
    options.read(true).write(true);
    // Offsets come with every write; the kernel handles append, truncation and sync flags.
    let handled_here = libc::O_ACCMODE
        | libc::O_APPEND
        | libc::O_TRUNC
        | libc::O_CREAT
        | libc::O_EXCL
        | libc::O_SYNC
        | libc::O_DSYNC
        | libc::O_DIRECT;
    options.custom_flags(flags & !handled_here);
    options
}

struct PowerFsServer {
    state: Arc<Mutex<State>>,
}

impl PowerFsServer {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Filesystem for PowerFsServer {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut state = self.state();
        let result = state
            .child(parent.0, name)
            .and_then(|(full, relative)| state.lookup_path(&full, relative));
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let state = self.state();
        let meta = match fh.and_then(|fh| state.handles.get(&fh.0)) {
            Some(handle) => handle.file.metadata(),
            None => match state.path(ino.0) {
                Ok(path) => std::fs::symlink_metadata(path),
                Err(e) => return reply.error(e),
            },
        };
        match meta {
            Ok(meta) => reply.attr(&TTL, &state.attr(&meta)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        let path = match state.path(ino.0) {
            Ok(path) => path,
            Err(e) => return reply.error(e),
        };
        if let Some(mode) = mode
            && let Err(e) =
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
        {
            return reply.error(errno(&e));
        }
        if let Some(size) = size {
            let file = match fh.and_then(|fh| state.handles.get(&fh.0)) {
                Some(handle) => handle.file.try_clone(),
                None => OpenOptions::new().write(true).open(&path),
            };
            let result = file
                .map_err(|e| errno(&e))
                .and_then(|file| state.truncate(ino.0, &file, size));
            if let Err(e) = result {
                return reply.error(e);
            }
        }
        match std::fs::symlink_metadata(&path) {
            Ok(meta) => reply.attr(&TTL, &state.attr(&meta)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let result = state.child(parent.0, name).and_then(|(full, relative)| {
            std::fs::create_dir(&full).map_err(|e| errno(&e))?;
            let _ = std::fs::set_permissions(
                &full,
                std::fs::Permissions::from_mode(mode & !umask & 0o7777),
            );
            state.lookup_path(&full, relative)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let result = state.child(parent.0, name).and_then(|(full, relative)| {
            let meta = std::fs::symlink_metadata(&full).map_err(|e| errno(&e))?;
            std::fs::remove_file(&full).map_err(|e| errno(&e))?;
            let ino = state.ino_of(&meta);
            state.released_name(ino, &meta);
            state.forget_name(&relative);
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let result = state.child(parent.0, name).and_then(|(full, relative)| {
            std::fs::remove_dir(&full).map_err(|e| errno(&e))?;
            state.forget_name(&relative);
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let result = (|| {
            let (from, from_rel) = state.child(parent.0, name)?;
            let (to, to_rel) = state.child(newparent.0, newname)?;
            if let Ok(replaced) = std::fs::symlink_metadata(&to) {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                if replaced.is_file() {
                    let ino = state.ino_of(&replaced);
                    state.released_name(ino, &replaced);
                }
                state.forget_name(&to_rel);
            }
            std::fs::rename(&from, &to).map_err(|e| errno(&e))?;
            // The name moves, and with a directory every name below it.
            for names in state.paths.values_mut() {
                for n in names.iter_mut() {
                    if let Ok(rest) = n.strip_prefix(&from_rel) {
                        *n = if rest.as_os_str().is_empty() {
                            to_rel.clone()
                        } else {
                            to_rel.join(rest)
                        };
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let result = (|| {
            let from = state.path(ino.0)?;
            let (to, to_rel) = state.child(newparent.0, newname)?;
            // The new name must see the data written so far: unsynced pages are keyed by
            // inode, so both names share them.
            std::fs::hard_link(&from, &to).map_err(|e| errno(&e))?;
            state.lookup_path(&to, to_rel)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state();
        let result = state
            .path(ino.0)
            .and_then(|path| open_options(flags.0).open(path).map_err(|e| errno(&e)));
        match result {
            Ok(file) => {
                let fh = state.open_handle(file, flags.0);
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.state();
        let result = (|| {
            let (full, relative) = state.child(parent.0, name)?;
            let existed = std::fs::symlink_metadata(&full).ok();
            let mut options = open_options(flags);
            options.write(true).mode(mode & !umask & 0o7777);
            if flags & libc::O_EXCL != 0 {
                options.create_new(true);
            } else {
                options.create(true);
            }
            let file = options.open(&full).map_err(|e| errno(&e))?;
            let attr = state.lookup_path(&full, relative)?;
            let ino = attr.ino.0;
            if flags & libc::O_TRUNC != 0 && existed.is_some() {
                state.truncate(ino, &file, 0)?;
            }
            let attr = state.attr(&file.metadata().map_err(|e| errno(&e))?);
            let fh = state.open_handle(file, flags);
            Ok((attr, fh))
        })();
        match result {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.state();
        let result = match state.handles.get(&fh.0) {
            Some(handle) => state.read(ino.0, &handle.file, offset, size),
            None => Err(Errno::EBADF),
        };
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state();
        match state.write(ino.0, fh.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) does not make data durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let file = state
            .handles
            .get(&fh.0)
            .and_then(|h| h.file.try_clone().ok());
        match state.sync(ino.0, file.as_ref()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.state();
        let path = match state.path(ino.0) {
            Ok(path) => path,
            Err(e) => return reply.error(e),
        };
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut listing = vec![
            (ino.0, FileType::Directory, OsStr::new(".").to_os_string()),
            (ino.0, FileType::Directory, OsStr::new("..").to_os_string()),
        ];
        for entry in entries.flatten() {
            let kind = match entry.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            listing.push((entry.ino() + 1, kind, entry.file_name()));
        }
        for (i, (entry_ino, kind, name)) in listing.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(entry_ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Metadata is durable at once in this model.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let state = self.state();
        let (blocks, free) = match state.quota {
            Some(quota) => (quota / PAGE, quota.saturating_sub(state.used) / PAGE),
            None => match backing_statvfs(&state.backing) {
                Some((total, free)) => (total / PAGE, free / PAGE),
                None => return reply.error(Errno::EIO),
            },
        };
        reply.statfs(
            blocks,
            free,
            free,
            1 << 20,
            1 << 20,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // RocksDB preallocates with FALLOC_FL_KEEP_SIZE, a hint: accepted and ignored.
        if mode & libc::FALLOC_FL_KEEP_SIZE != 0 {
            reply.ok();
        } else {
            reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
    }
}

/// Total and available bytes of the filesystem holding `path`.
fn backing_statvfs(path: &Path) -> Option<(u64, u64)> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a statvfs struct to fill.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let unit = stat.f_frsize as u64;
    Some((stat.f_blocks as u64 * unit, stat.f_bavail as u64 * unit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Data written and synced survives a power cut; data written after the last sync does not,
    /// and the file is back at its synced size.
    #[test]
    fn a_power_cut_keeps_synced_data_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let fs = PowerFs::mount(&dir.path().join("backing"), &dir.path().join("mnt")).unwrap();
        let path = fs.mountpoint().join("wal");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"synced;").unwrap();
        file.sync_data().unwrap();
        file.write_all(b"not synced").unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"synced;not synced");
        assert_eq!(fs.usage().used, 17);
        let lost = fs.cut_power();
        assert!(lost > 0);
        assert_eq!(std::fs::read(&path).unwrap(), b"synced;");
        assert_eq!(fs.usage().used, 7);
        // Renamed and hard-linked names see the same (synced) data.
        std::fs::rename(&path, fs.mountpoint().join("wal2")).unwrap();
        std::fs::hard_link(fs.mountpoint().join("wal2"), fs.mountpoint().join("wal3")).unwrap();
        assert_eq!(
            std::fs::read(fs.mountpoint().join("wal3")).unwrap(),
            b"synced;"
        );
    }

    /// Past the quota a write fails with ENOSPC and statfs shows no space; raising it lets
    /// writes go on.
    #[test]
    fn a_full_disk_answers_no_space_until_it_is_freed() {
        let dir = tempfile::tempdir().unwrap();
        let fs = PowerFs::mount(&dir.path().join("backing"), &dir.path().join("mnt")).unwrap();
        let path = fs.mountpoint().join("data");
        std::fs::write(&path, vec![1u8; 10_000]).unwrap();
        fs.fill();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        let e = file.write_all(&[2u8; 100]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(backing_statvfs(fs.mountpoint()).unwrap().1, 0);
        fs.set_quota(None);
        file.write_all(&[2u8; 100]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 10_100);
    }
}
