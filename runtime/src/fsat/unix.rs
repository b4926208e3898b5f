//! The Unix side of [`crate::fsat`]: the `openat` family, never following
//! a symlink.

use std::ffi::CString;
use std::fs::File;
use std::io;
pub use std::os::fd::{AsRawFd, OwnedFd as Handle, RawFd};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use super::Kind;

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

fn cstr(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
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
    let c = cstr(name)?;
    // SAFETY: valid descriptor and NUL-terminated name.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), DIR_FLAGS) };
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
    Ok(match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    })
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

/// The names in a directory (not `.` or `..`); names that are not UTF-8 are
/// returned lossily and so never match a snapshot path.
pub fn read_names(dir: RawFd) -> io::Result<Vec<String>> {
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
    let mut out = Vec::new();
    loop {
        // SAFETY: `d` is a valid DIR*.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b == b"." || b == b".." {
            continue;
        }
        out.push(String::from_utf8_lossy(b).into_owned());
    }
    // SAFETY: closes `d` and `dup`.
    unsafe { libc::closedir(d) };
    Ok(out)
}

fn times(ns: i64) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
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

/// Bytes available to this user on the file system holding `path`; `None`
/// when it cannot be told.
pub fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
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
