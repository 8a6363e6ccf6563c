//! A disk that forgets what was never synced, for power-failure tests.
//!
//! Killing a process with SIGKILL is not a power failure: the kernel's page cache survives
//! it, so every write the process made reaches the disk whether or not it was synced.
//! [`LazyDisk`] mounts a FUSE filesystem over a backing folder (the kernel's FUSE driver; the
//! filesystem itself runs in this process) that passes every operation through and
//! remembers, per file, what has not been synced yet: its length at the last `fsync` and the
//! bytes each later write or truncation replaced. [`LazyDisk::power_loss`] unmounts it
//! (every process using it must be gone), puts back what each file held at its last sync,
//! and mounts it again: what a machine that lost power finds on its disk. It is the model
//! of Jepsen's lazyfs: file data is durable once synced; metadata (creating, renaming and
//! removing files and folders) is durable at once.
//!
//! Mounting needs `/dev/fuse` and CAP_SYS_ADMIN (root); without them [`LazyDisk::mount`]
//! fails saying so.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

/// How long the kernel may cache a name or an attribute. The filesystem is the only writer
/// of its backing folder while mounted, and a power loss remounts it (dropping the cache).
const TTL: Duration = Duration::from_secs(1);

/// A backing file's identity, stable across renames: (device, inode).
type FileKey = (u64, u64);

/// What a power loss drops from one file.
#[derive(Debug, Default)]
struct Unsynced {
    /// The file's length at its last sync (or when first written here, for a file that
    /// existed before).
    synced_len: u64,
    /// The bytes each write or truncation since then replaced below `synced_len`, in order:
    /// put back in reverse order, they give the synced content.
    replaced: Vec<(u64, Vec<u8>)>,
}

/// A FUSE filesystem over a backing folder that forgets unsynced data at a power loss.
#[derive(Debug)]
pub struct LazyDisk {
    mount: PathBuf,
    backing: PathBuf,
    unsynced: Arc<Mutex<HashMap<FileKey, Unsynced>>>,
    session: Option<fuser::BackgroundSession>,
}

/// What a [`LazyDisk::power_loss`] put back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PowerLoss {
    /// Files whose content went back to their last sync.
    pub files: usize,
    /// Bytes written or cut off since those syncs, now gone.
    pub bytes: u64,
}

impl LazyDisk {
    /// Mounts a lazy disk at `mount` (created if missing) over `backing` (created if
    /// missing; what is in it counts as synced).
    pub fn mount(backing: &Path, mount: &Path) -> Result<Self> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mount)?;
        let mut disk = Self {
            mount: mount.to_path_buf(),
            backing: backing.canonicalize()?,
            unsynced: Arc::default(),
            session: None,
        };
        disk.attach()?;
        Ok(disk)
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    fn attach(&mut self) -> Result<()> {
        if !Path::new("/dev/fuse").exists() {
            bail!("a lazy disk needs /dev/fuse (FUSE), which this machine does not have");
        }
        let fs = LazyFs {
            backing: self.backing.clone(),
            inodes: Mutex::new(Inodes::new(&self.backing)?),
            handles: Mutex::default(),
            next_handle: AtomicU64::new(1),
            unsynced: self.unsynced.clone(),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("murmur-lazy-disk".into()),
            fuser::MountOption::Subtype("murmur-lazy-disk".into()),
        ];
        config.n_threads = Some(2);
        let session = fuser::spawn_mount(fs, &self.mount, &config).with_context(|| {
            format!(
                "mounting a lazy disk (FUSE) at {} failed: it needs /dev/fuse and root (CAP_SYS_ADMIN)",
                self.mount.display()
            )
        })?;
        self.session = Some(session);
        Ok(())
    }

    /// Files changed since their last sync, by their path on the disk: those a power loss
    /// now would put back (a file grown by nothing or rewritten with what it held counts).
    pub fn unsynced_files(&self) -> Result<Vec<PathBuf>> {
        let unsynced: HashMap<FileKey, (u64, bool)> = self
            .unsynced
            .lock()
            .iter()
            .map(|(key, state)| (*key, (state.synced_len, state.replaced.is_empty())))
            .collect();
        let mut found = Vec::new();
        for (path, meta) in self.backing_files()? {
            if let Some(&(synced_len, nothing_replaced)) = unsynced.get(&(meta.dev(), meta.ino()))
                && (meta.len() != synced_len || !nothing_replaced)
            {
                found.push(self.mount.join(path.strip_prefix(&self.backing)?));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Every file in the backing folder, with its metadata.
    fn backing_files(&self) -> Result<Vec<(PathBuf, std::fs::Metadata)>> {
        let mut files = Vec::new();
        let mut folders = vec![self.backing.clone()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                if meta.is_dir() {
                    folders.push(entry.path());
                } else {
                    files.push((entry.path(), meta));
                }
            }
        }
        Ok(files)
    }

    /// A power loss: unmounts the disk, puts every file back to what it held at its last
    /// sync, and mounts it again. Every process with a file open on it must have exited
    /// (it is killed with the power).
    pub fn power_loss(&mut self) -> Result<PowerLoss> {
        if let Some(session) = self.session.take() {
            session.umount_and_join().with_context(|| {
                format!(
                    "unmounting the lazy disk at {} (is a process still using it?)",
                    self.mount.display()
                )
            })?;
        }
        let mut unsynced = std::mem::take(&mut *self.unsynced.lock());
        let mut lost = PowerLoss::default();
        for (path, meta) in self.backing_files()? {
            let Some(state) = unsynced.remove(&(meta.dev(), meta.ino())) else {
                continue;
            };
            let file = OpenOptions::new().write(true).open(&path)?;
            lost.files += 1;
            lost.bytes += meta.len().saturating_sub(state.synced_len);
            for (offset, bytes) in state.replaced.iter().rev() {
                lost.bytes += bytes.len() as u64;
                file.write_all_at(bytes, *offset)?;
            }
            file.set_len(state.synced_len)?;
        }
        self.attach()?;
        Ok(lost)
    }
}

impl Drop for LazyDisk {
    fn drop(&mut self) {
        if let Some(session) = self.session.take()
            && session.umount_and_join().is_err()
        {
            // A process still holds a file open: detach it lazily rather than leave a
            // mount behind.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mount)
                .status();
        }
    }
}

/// The FUSE inode numbers handed out, and the backing path of each.
struct Inodes {
    paths: HashMap<u64, PathBuf>,
    by_key: HashMap<FileKey, u64>,
    next: u64,
}

impl Inodes {
    fn new(root: &Path) -> io::Result<Self> {
        let meta = std::fs::metadata(root)?;
        Ok(Self {
            paths: HashMap::from([(INodeNo::ROOT.0, root.to_path_buf())]),
            by_key: HashMap::from([((meta.dev(), meta.ino()), INodeNo::ROOT.0)]),
            next: INodeNo::ROOT.0 + 1,
        })
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    /// The inode number of the file at `path` with metadata `meta`.
    fn register(&mut self, path: PathBuf, meta: &Metadata) -> u64 {
        let ino = *self
            .by_key
            .entry((meta.dev(), meta.ino()))
            .or_insert_with(|| {
                self.next += 1;
                self.next - 1
            });
        self.paths.insert(ino, path);
        ino
    }

    /// After the file or folder `key` at `path` was removed: its number and every path
    /// under it are forgotten.
    fn removed(&mut self, key: FileKey, path: &Path) {
        self.by_key.remove(&key);
        self.paths.retain(|_, p| !p.starts_with(path));
    }

    /// After `from` was renamed to `to`: every path under it moves.
    fn renamed(&mut self, from: &Path, to: &Path) {
        for p in self.paths.values_mut() {
            if let Ok(rest) = p.strip_prefix(from) {
                // `join("")` would add a trailing slash.
                *p = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
            }
        }
    }
}

struct LazyFs {
    backing: PathBuf,
    inodes: Mutex<Inodes>,
    handles: Mutex<HashMap<u64, Arc<File>>>,
    next_handle: AtomicU64,
    unsynced: Arc<Mutex<HashMap<FileKey, Unsynced>>>,
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

/// Answers an operation that returns nothing but success or an error.
fn answer(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn time_of(secs: i64, nanos: i64) -> SystemTime {
    let nanos = u32::try_from(nanos).unwrap_or(0);
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::new(s, nanos),
        Err(_) => UNIX_EPOCH,
    }
}

fn attr(ino: u64, meta: &Metadata) -> FileAttr {
    let kind = if meta.is_dir() {
        FileType::Directory
    } else if meta.file_type().is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(ino),
        size: meta.len(),
        blocks: meta.blocks(),
        atime: time_of(meta.atime(), meta.atime_nsec()),
        mtime: time_of(meta.mtime(), meta.mtime_nsec()),
        ctime: time_of(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: meta.blksize() as u32,
        flags: 0,
    }
}

/// Reads `len` bytes at `offset`, zeros past the end of the file; and how many were in it.
fn read_padded(file: &File, offset: u64, len: usize) -> io::Result<(Vec<u8>, usize)> {
    let mut buf = vec![0; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], offset + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok((buf, done))
}

impl LazyFs {
    fn handle(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        self.handles.lock().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn keep(&self, file: File) -> FileHandle {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Arc::new(file));
        FileHandle(fh)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.inodes.lock().path(parent)?.join(name))
    }

    fn entry(&self, path: PathBuf) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
        let ino = self.inodes.lock().register(path, &meta);
        Ok(attr(ino, &meta))
    }

    /// Records what the range `[offset, offset + len)` of `file` holds below its synced
    /// length before it changes. Files already unlinked are not tracked: no path reaches
    /// them after a power loss.
    fn before_change(
        &self,
        unsynced: &mut HashMap<FileKey, Unsynced>,
        file: &File,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let meta = file.metadata()?;
        if meta.nlink() == 0 {
            return Ok(());
        }
        let state = unsynced
            .entry((meta.dev(), meta.ino()))
            .or_insert_with(|| Unsynced {
                synced_len: meta.len(),
                replaced: Vec::new(),
            });
        let end = offset.saturating_add(len).min(state.synced_len);
        if offset < end {
            let (old, _) = read_padded(file, offset, (end - offset) as usize)?;
            state.replaced.push((offset, old));
        }
        Ok(())
    }

    fn truncate(&self, file: &File, size: u64) -> io::Result<()> {
        let mut unsynced = self.unsynced.lock();
        let len = file.metadata()?.len();
        if size < len {
            self.before_change(&mut unsynced, file, size, len - size)?;
        } else {
            self.before_change(&mut unsynced, file, len, 0)?;
        }
        file.set_len(size)
    }

    fn open_path(&self, path: &Path, flags: i32) -> io::Result<File> {
        let writable = flags & libc_consts::O_ACCMODE != libc_consts::O_RDONLY;
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        if flags & libc_consts::O_TRUNC != 0 && writable {
            self.truncate(&file, 0)?;
        }
        Ok(file)
    }
}

/// The open(2) flag bits this filesystem looks at (Linux values).
mod libc_consts {
    pub const O_ACCMODE: i32 = 0o3;
    pub const O_RDONLY: i32 = 0;
    pub const O_TRUNC: i32 = 0o1000;
    pub const O_EXCL: i32 = 0o200;
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name).and_then(|p| self.entry(p)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let meta = match fh.map(|fh| self.handle(fh)) {
            Some(Ok(file)) => file.metadata().map_err(errno),
            _ => self
                .inodes
                .lock()
                .path(ino)
                .and_then(|p| std::fs::symlink_metadata(p).map_err(errno)),
        };
        match meta {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, &m)),
            Err(e) => reply.error(e),
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
        let result = (|| -> Result<Metadata, Errno> {
            let path = self.inodes.lock().path(ino)?;
            if let Some(mode) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(errno)?;
            }
            if let Some(size) = size {
                let file = match fh.map(|fh| self.handle(fh)) {
                    Some(Ok(file)) => file,
                    _ => Arc::new(
                        OpenOptions::new()
                            .read(true)
                            .write(true)
                            .open(&path)
                            .map_err(errno)?,
                    ),
                };
                self.truncate(&file, size).map_err(errno)?;
                return file.metadata().map_err(errno);
            }
            std::fs::symlink_metadata(&path).map_err(errno)
        })();
        match result {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, &m)),
            Err(e) => reply.error(e),
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
        let result = self.child(parent, name).and_then(|path| {
            std::fs::create_dir(&path).map_err(errno)?;
            std::fs::set_permissions(
                &path,
                std::fs::Permissions::from_mode(mode & !umask & 0o7777),
            )
            .map_err(errno)?;
            self.entry(path)
        });
        match result {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.child(parent, name).and_then(|path| {
            let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
            std::fs::remove_file(&path).map_err(errno)?;
            if meta.nlink() <= 1 {
                let key = (meta.dev(), meta.ino());
                self.unsynced.lock().remove(&key);
                self.inodes.lock().removed(key, &path);
            }
            Ok(())
        });
        answer(reply, result);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.child(parent, name).and_then(|path| {
            let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
            std::fs::remove_dir(&path).map_err(errno)?;
            self.inodes.lock().removed((meta.dev(), meta.ino()), &path);
            Ok(())
        });
        answer(reply, result);
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
        if !flags.is_empty() {
            reply.error(Errno::EINVAL);
            return;
        }
        let result = (|| -> Result<(), Errno> {
            let from = self.child(parent, name)?;
            let to = self.child(newparent, newname)?;
            let replaced = std::fs::symlink_metadata(&to).ok();
            std::fs::rename(&from, &to).map_err(errno)?;
            let mut inodes = self.inodes.lock();
            if let Some(old) = replaced {
                let key = (old.dev(), old.ino());
                if !old.is_dir() && old.nlink() <= 1 {
                    self.unsynced.lock().remove(&key);
                }
                inodes.removed(key, &to);
            }
            inodes.renamed(&from, &to);
            Ok(())
        })();
        answer(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = self
            .inodes
            .lock()
            .path(ino)
            .and_then(|path| self.open_path(&path, flags.0).map_err(errno));
        match result {
            Ok(file) => reply.opened(self.keep(file), FopenFlags::empty()),
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
        let result = (|| -> Result<(FileAttr, File), Errno> {
            let path = self.child(parent, name)?;
            let existed = path.exists();
            if existed && flags & libc_consts::O_EXCL != 0 {
                return Err(Errno::EEXIST);
            }
            let file = if existed {
                self.open_path(&path, flags).map_err(errno)?
            } else {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(mode & !umask & 0o7777)
                    .open(&path)
                    .map_err(errno)?;
                let meta = file.metadata().map_err(errno)?;
                // A new file's name is durable at once, its content from its first sync.
                self.unsynced
                    .lock()
                    .insert((meta.dev(), meta.ino()), Unsynced::default());
                file
            };
            let meta = file.metadata().map_err(errno)?;
            let ino = self.inodes.lock().register(path, &meta);
            Ok((attr(ino, &meta), file))
        })();
        match result {
            Ok((a, file)) => reply.created(
                &TTL,
                &a,
                Generation(0),
                self.keep(file),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.handle(fh).and_then(|file| {
            let (mut buf, read) = read_padded(&file, offset, size as usize).map_err(errno)?;
            buf.truncate(read);
            Ok(buf)
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = self.handle(fh).and_then(|file| {
            let mut unsynced = self.unsynced.lock();
            self.before_change(&mut unsynced, &file, offset, data.len() as u64)
                .map_err(errno)?;
            file.write_all_at(data, offset).map_err(errno)
        });
        match result {
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
        self.handles.lock().remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // What the file holds now is what a power loss leaves: nothing to put back, and its
        // next change starts a record from its length then. The backing folder itself is
        // not synced: the model is what counts, and the machine's power stays on.
        let result = self.handle(fh).and_then(|file| {
            let meta = file.metadata().map_err(errno)?;
            self.unsynced.lock().remove(&(meta.dev(), meta.ino()));
            Ok(())
        });
        answer(reply, result);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = (|| -> Result<Vec<(u64, FileType, std::ffi::OsString)>, Errno> {
            let path = self.inodes.lock().path(ino)?;
            let mut names: Vec<_> = std::fs::read_dir(&path)
                .map_err(errno)?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            names.sort();
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".into()),
                (ino.0, FileType::Directory, "..".into()),
            ];
            for name in names {
                let child = path.join(&name);
                // A file removed between listing and reading is left out.
                if let Ok(a) = self.entry(child) {
                    entries.push((a.ino.0, a.kind, name));
                }
            }
            Ok(entries)
        })();
        match result {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // The backing folder's free space, in 4 KiB blocks, as the servers size their
        // stores from it.
        let (blocks, free) = fs_space(&self.backing).unwrap_or((1 << 28, 1 << 27));
        reply.statfs(blocks, free, free, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// Total and free 4 KiB blocks of the filesystem holding `path`.
fn fs_space(path: &Path) -> Option<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    let unit = stat.fragment_size().max(1);
    Some((
        stat.blocks() * unit / 4096,
        stat.blocks_available() * unit / 4096,
    ))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    use super::*;

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    #[test]
    fn a_power_loss_keeps_what_was_synced_and_nothing_else() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("backing"))?;
        std::fs::write(dir.path().join("backing/before"), b"from before the mount")?;
        let mut disk = LazyDisk::mount(&dir.path().join("backing"), &dir.path().join("disk"))?;
        let root = disk.path().to_path_buf();

        // Synced, then changed in place and appended to without a sync.
        let mut synced = File::create(root.join("synced"))?;
        synced.write_all(b"0123456789")?;
        assert_eq!(disk.unsynced_files()?, [root.join("synced")]);
        synced.sync_all()?;
        assert_eq!(
            disk.unsynced_files()?,
            Vec::<PathBuf>::new(),
            "a synced file has nothing to lose"
        );
        synced.seek(SeekFrom::Start(2))?;
        synced.write_all(b"ab")?;
        synced.seek(SeekFrom::End(0))?;
        synced.write_all(b"tail")?;
        // Never synced: its name stays, its bytes go.
        std::fs::write(root.join("never"), b"lost")?;
        // Synced under a temporary name, renamed into place, then cut short unsynced.
        let mut moved = File::create(root.join("moved.tmp"))?;
        moved.write_all(b"kept whole")?;
        moved.sync_data()?;
        std::fs::rename(root.join("moved.tmp"), root.join("moved"))?;
        moved.set_len(4)?;
        // A file that existed before: overwritten, then removed and recreated unsynced.
        std::fs::OpenOptions::new()
            .write(true)
            .open(root.join("before"))?
            .write_all(b"FROM")?;
        std::fs::create_dir(root.join("folder"))?;
        std::fs::write(root.join("folder/gone"), b"x")?;
        std::fs::remove_file(root.join("folder/gone"))?;
        drop((synced, moved));

        // Before the power loss, every write is there.
        assert_eq!(
            disk.unsynced_files()?,
            ["before", "moved", "never", "synced"].map(|name| root.join(name))
        );
        assert_eq!(read(&root.join("synced")), b"01ab456789tail");
        assert_eq!(read(&root.join("never")), b"lost");
        assert_eq!(read(&root.join("moved")), b"kept");

        let lost = disk.power_loss()?;
        assert_eq!(read(&root.join("synced")), b"0123456789");
        assert_eq!(read(&root.join("never")), b"");
        assert_eq!(read(&root.join("moved")), b"kept whole");
        assert_eq!(read(&root.join("before")), b"from before the mount");
        assert!(!root.join("moved.tmp").exists());
        assert!(root.join("folder").is_dir());
        assert!(!root.join("folder/gone").exists());
        // 2 + 4 bytes of `synced`, 4 of `never`, 6 cut off `moved`, 4 of `before`.
        assert_eq!(
            lost,
            PowerLoss {
                files: 4,
                bytes: 20
            }
        );

        // Mounted again: usable, and a second power loss with nothing written loses nothing.
        let mut again = String::new();
        File::open(root.join("synced"))?.read_to_string(&mut again)?;
        assert_eq!(again, "0123456789");
        assert_eq!(disk.unsynced_files()?, Vec::<PathBuf>::new());
        assert_eq!(disk.power_loss()?, PowerLoss::default());
        Ok(())
    }
}
