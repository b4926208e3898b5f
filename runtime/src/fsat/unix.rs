//! The Unix side of [`crate::fsat`]: the `openat` family, never following
//! a symlink.

use std::ffi::CString;
use std::fs::File;
use std::io;
pub use std::os::fd::{AsRawFd, OwnedFd as Handle, RawFd};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::Kind;
use crate::scan::Stat;

/// The workspace's own handle (the workspace itself may be reached through
/// a symlink: it is the user's choice, not the snapshot's).
pub fn open_root(root: &Path) -> io::Result<Handle> {
    let f = File::open(root)?;
    if !f.metadata()?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "the workspace is not a directory",
        ));
    }
    Ok(OwnedFd::from(f))
}

fn cstr(name: impl AsRef<[u8]>) -> io::Result<CString> {
    CString::new(name.as_ref())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

const DIR_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// Open `name` in `dir` as a directory, refusing a symlink.
pub fn open_dir_at(dir: RawFd, name: &str) -> io::Result<OwnedFd> {
    open_dir_c(dir, &cstr(name)?)
}

/// `name` relative to `dir` (or to the working directory, `AT_FDCWD`; an
/// absolute path ignores `dir`) as a directory, refusing a symlink in its
/// last component.
fn open_dir_c(dir: RawFd, name: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: valid descriptor (or AT_FDCWD) and NUL-terminated name.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), DIR_FLAGS) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn kind_at(dir: RawFd, name: &str) -> io::Result<Kind> {
    let c = cstr(name)?;
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, name and out-parameter.
    let rc = unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::NotFound {
            Ok(Kind::Missing)
        } else {
            Err(e)
        };
    }
    Ok(kind_of(st.st_mode))
}

/// Create a new file (never an existing one, never through a symlink).
pub fn create_file_at(dir: RawFd, name: &str) -> io::Result<File> {
    create_mode(dir, name, 0o600)
}

/// Create a new file like [`create_file_at`] whose permission bits are
/// `mode` (`0o777` bits), open for writing whatever they are. With a
/// file-creation mask that keeps `mode` whole (the usual 022 for 644 and
/// 755), the create itself sets it; otherwise the file is created private
/// and changed to `mode` (a restore sets the snapshot's modes exactly).
pub fn create_file_with_mode_at(dir: RawFd, name: &str, mode: u32) -> io::Result<File> {
    match umask() {
        Some(mask) if mode & mask == 0 => create_mode(dir, name, mode),
        _ => {
            let f = create_mode(dir, name, 0o600)?;
            // SAFETY: valid descriptor.
            check(unsafe { libc::fchmod(f.as_raw_fd(), mode as libc::mode_t) })?;
            Ok(f)
        }
    }
}

fn create_mode(dir: RawFd, name: &str, mode: u32) -> io::Result<File> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and name.
    let fd = unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            (mode & 0o777) as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The process's file-creation mask, where it can be read without
/// changing it (Linux: `Umask:` in /proc/self/status, since 4.7). Setting
/// it to read it would race with other threads creating files.
fn umask() -> Option<u32> {
    static MASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *MASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// Set only the modification time of an open file.
pub fn set_mtime_fd(fd: RawFd, mtime_ns: i64) -> io::Result<()> {
    let t = times(mtime_ns);
    // SAFETY: valid descriptor and a two-element array.
    check(unsafe { libc::futimens(fd, t.as_ptr()) })
}

/// Open an existing regular file for writing, refusing a symlink.
pub fn open_file_at(dir: RawFd, name: &str, write: bool) -> io::Result<File> {
    let c = cstr(name)?;
    let mode = if write {
        libc::O_WRONLY
    } else {
        libc::O_RDONLY
    };
    // SAFETY: valid descriptor and name.
    let fd = unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            mode | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let f = unsafe { File::from_raw_fd(fd) };
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

pub fn mkdir_at(dir: RawFd, name: &str, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and name.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode as libc::mode_t) })
}

pub fn symlink_at(target: &str, dir: RawFd, name: &str) -> io::Result<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    // SAFETY: valid descriptor and names.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) })
}

pub fn rename_at(from_dir: RawFd, from: &str, to_dir: RawFd, to: &str) -> io::Result<()> {
    let a = cstr(from)?;
    let b = cstr(to)?;
    // SAFETY: valid descriptors and names.
    check(unsafe { libc::renameat(from_dir, a.as_ptr(), to_dir, b.as_ptr()) })
}

/// Remove whatever `name` is (a directory with everything in it), never
/// following a symlink. Missing is fine.
pub fn remove_at(dir: RawFd, name: &str) -> io::Result<()> {
    match kind_at(dir, name)? {
        Kind::Missing => Ok(()),
        Kind::Dir => {
            {
                let sub = open_dir_at(dir, name)?;
                let names: Vec<String> = read_names(sub.as_raw_fd())?;
                for n in names {
                    remove_at(sub.as_raw_fd(), &n)?;
                }
            }
            let c = cstr(name)?;
            // SAFETY: valid descriptor and name.
            check(unsafe { libc::unlinkat(dir, c.as_ptr(), libc::AT_REMOVEDIR) })
        }
        _ => {
            let c = cstr(name)?;
            // SAFETY: valid descriptor and name.
            check(unsafe { libc::unlinkat(dir, c.as_ptr(), 0) })
        }
    }
}

/// Remove an empty directory (used to roll back directories we created).
pub fn rmdir_at(dir: RawFd, name: &str) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and name.
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), libc::AT_REMOVEDIR) })
}

/// Call `f` with each name in a directory (not `.` or `..`), as bytes.
fn each_name(dir: RawFd, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    // Read through a duplicate so the caller's handle stays usable.
    // SAFETY: dup of a valid descriptor.
    let dup = unsafe { libc::fcntl(dir, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fdopendir takes ownership of `dup` on success.
    let d = unsafe { libc::fdopendir(dup) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: still ours on failure.
        unsafe { libc::close(dup) };
        return Err(e);
    }
    // SAFETY: rewind in case the descriptor was read before.
    unsafe { libc::rewinddir(d) };
    loop {
        // SAFETY: `d` is a valid DIR*.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b != b"." && b != b".." {
            f(b);
        }
    }
    // SAFETY: closes `d` and `dup`.
    unsafe { libc::closedir(d) };
    Ok(())
}

/// The names in a directory (not `.` or `..`); names that are not UTF-8 are
/// returned lossily and so never match a snapshot path.
pub fn read_names(dir: RawFd) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    each_name(dir, |b| out.push(String::from_utf8_lossy(b).into_owned()))?;
    Ok(out)
}

/// A directory opened for the save's walk ([`crate::scan`]): listed, and
/// its entries stat'ed and its subdirectories opened relative to its
/// handle, so the kernel resolves one name per call, never a whole path,
/// and a directory swapped for a symlink during the walk is not followed.
/// (Rust's std stats a listed entry by its full path on musl and macOS:
/// at 120,000 files that was most of a no-change save's system time.)
pub struct WalkDir(OwnedFd);

/// One name listed by [`WalkDir::list`].
pub struct Listed(std::ffi::OsString);

impl Listed {
    pub fn name(&self) -> &std::ffi::OsStr {
        &self.0
    }
}

impl WalkDir {
    /// Open a configured root (already known to be a directory), refusing
    /// a symlink in its last component.
    pub fn open(abs: &Path) -> io::Result<WalkDir> {
        let c = cstr(abs.as_os_str().as_bytes())?;
        open_dir_c(libc::AT_FDCWD, &c).map(WalkDir)
    }

    /// Open the subdirectory `l`, refusing a symlink.
    pub fn open_child(&self, l: &Listed) -> io::Result<WalkDir> {
        open_dir_c(self.0.as_raw_fd(), &cstr(l.0.as_bytes())?).map(WalkDir)
    }

    /// The names in this directory (call once: it reads from the handle's
    /// position).
    pub fn list(&self) -> io::Result<Vec<Listed>> {
        let mut out = Vec::new();
        let push = |b: &[u8]| out.push(Listed(std::ffi::OsStr::from_bytes(b).to_owned()));
        #[cfg(any(target_os = "linux", target_os = "android"))]
        getdents(self.0.as_raw_fd(), push)?;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        each_name(self.0.as_raw_fd(), push)?;
        Ok(out)
    }

    /// What `l` is and its `lstat`, relative to this directory.
    pub fn stat(&self, l: &Listed) -> io::Result<(Kind, Stat)> {
        let c = cstr(l.0.as_bytes())?;
        // SAFETY: zeroed stat is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, name and out-parameter.
        check(unsafe {
            libc::fstatat(
                self.0.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        Ok((kind_of(st.st_mode), stat_of(&st)))
    }

    /// The target of the symlink `l`.
    pub fn read_link(&self, l: &Listed) -> io::Result<std::ffi::OsString> {
        use std::os::unix::ffi::OsStringExt;
        let c = cstr(l.0.as_bytes())?;
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: valid descriptor and name; `buf` is writable for its length.
            let n = unsafe {
                libc::readlinkat(
                    self.0.as_raw_fd(),
                    c.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            if n < buf.len() {
                buf.truncate(n);
                return Ok(std::ffi::OsString::from_vec(buf));
            }
            // Possibly cut short: try again with more room.
            let more = buf.len() * 2;
            buf.resize(more, 0);
        }
    }
}

/// Call `f` with each name read from the directory handle `fd` by the
/// `getdents64` system call: `readdir` through `fdopendir` costs another
/// five calls per directory (a duplicate handle, `fstat`, `fcntl`, a seek
/// and a close), 57,000 of them for the 11,400 directories of a
/// 120,000-file `node_modules`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn getdents(fd: RawFd, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    // `struct linux_dirent64` (getdents64(2)): d_ino u64, d_off i64,
    // d_reclen u16, d_type u8, then the NUL-terminated name.
    const NAME_AT: usize = 19;
    // 32 KiB, aligned for the records, left uninitialised: zeroing it for
    // each of 11,400 directories would clear 370 MB.
    let mut buf: Vec<u64> = Vec::with_capacity(4096);
    loop {
        // SAFETY: valid descriptor; the buffer's capacity is writable.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd,
                buf.as_mut_ptr(),
                buf.capacity() * std::mem::size_of::<u64>(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the kernel wrote (initialised) `n` bytes at the start of
        // the buffer.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
        let mut at = 0;
        while at < bytes.len() {
            let bad = || io::Error::new(io::ErrorKind::InvalidData, "a malformed directory record");
            let rec = bytes.get(at..at + NAME_AT).ok_or_else(bad)?;
            let len = usize::from(u16::from_ne_bytes([rec[16], rec[17]]));
            let name = bytes.get(at + NAME_AT..at + len).ok_or_else(bad)?;
            let name = &name[..name.iter().position(|&b| b == 0).ok_or_else(bad)?];
            if name != b"." && name != b".." {
                f(name);
            }
            at += len;
        }
    }
}

fn kind_of(mode: libc::mode_t) -> Kind {
    match mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// The same figures as [`Stat::of`] reads from std's `Metadata`.
#[allow(clippy::unnecessary_cast)] // the field types differ between targets
fn stat_of(st: &libc::stat) -> Stat {
    Stat {
        size: st.st_size as u64,
        mtime_ns: st.st_mtime as i64 * 1_000_000_000 + st.st_mtime_nsec as i64,
        ctime_ns: st.st_ctime as i64 * 1_000_000_000 + st.st_ctime_nsec as i64,
        ino: st.st_ino as u64,
        mode: st.st_mode as u32 & 0o7777,
    }
}

fn times(ns: i64) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: ns.div_euclid(1_000_000_000) as _,
            tv_nsec: ns.rem_euclid(1_000_000_000) as _,
        },
    ]
}

/// Set mode and mtime through an open descriptor (no path, no symlink).
pub fn set_meta_fd(fd: RawFd, mode: u32, mtime_ns: i64) -> io::Result<()> {
    // SAFETY: valid descriptor.
    check(unsafe { libc::fchmod(fd, mode as libc::mode_t) })?;
    set_mtime_fd(fd, mtime_ns)
}

/// Set the mtime of `name` itself (a symlink's own time), never following.
pub fn set_mtime_nofollow_at(dir: RawFd, name: &str, mtime_ns: i64) -> io::Result<()> {
    let c = cstr(name)?;
    let t = times(mtime_ns);
    // SAFETY: valid descriptor, name and array.
    check(unsafe { libc::utimensat(dir, c.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

/// Set mode and mtime of an existing file or directory `name`, opened
/// without following a symlink (a symlink's mode is never changed).
pub fn set_meta_at(
    dir: RawFd,
    name: &str,
    is_dir: bool,
    mode: u32,
    mtime_ns: i64,
) -> io::Result<()> {
    let fd: OwnedFd = if is_dir {
        open_dir_at(dir, name)?
    } else {
        match open_file_at(dir, name, false) {
            Ok(f) => f.into(),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                open_file_at(dir, name, true)?.into()
            }
            Err(e) => return Err(e),
        }
    };
    set_meta_fd(fd.as_raw_fd(), mode, mtime_ns)
}

/// Open a file to read it, refusing a symlink (`ELOOP`).
pub fn open_nofollow(abs: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(abs)
}

/// The error an operation gets when it meets a symlink it will not follow.
pub fn is_loop(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

/// The error an operation gets when a path component is not a directory.
pub fn is_not_dir(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOTDIR)
}

/// Write all of `buf` at offset `off` (the file's cursor is not used).
pub fn write_all_at(f: &File, buf: &[u8], off: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, buf, off)
}

/// Make what was last created or renamed in directory `dir` durable (the
/// directory's own entries, which `fsync` of a file inside does not cover).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Bytes available to this user on the file system holding `path`; `None`
/// when it cannot be told.
pub fn free_space(path: &Path) -> Option<u64> {
    let c = cstr(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and an out-parameter of the right type.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Whether a process with this id exists.
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks whether the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// Block until this process holds the exclusive lock on `f` (released on
/// close).
pub fn lock_exclusive(f: &File) -> io::Result<()> {
    // SAFETY: flock on a descriptor we own.
    check(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) })
}

/// Raise the soft limit on open descriptors to the hard limit (macOS
/// starts processes at 256, Linux distributions at 1024; the hard limits are
/// far higher) and return the limit now in force.
// rlim_t is u64 on the 64-bit targets we build, not on every Unix.
#[allow(clippy::unnecessary_cast)]
pub fn raise_fd_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 256;
    }
    // macOS refuses a soft limit above OPEN_MAX even when the hard limit is
    // "unlimited".
    let want = if cfg!(target_os = "macos") {
        rl.rlim_max.min(10240)
    } else {
        rl.rlim_max.min(1 << 20)
    };
    if want > rl.rlim_cur {
        let new = libc::rlimit {
            rlim_cur: want,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            return want as u64;
        }
    }
    rl.rlim_cur as u64
}
