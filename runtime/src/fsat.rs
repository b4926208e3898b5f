//! File-system operations relative to directory handles, never following a
//! symlink: the only way restore touches the workspace.
//!
//! A directory is reached by opening each component from the workspace's
//! own handle with `O_DIRECTORY | O_NOFOLLOW`, at the moment it is needed
//! (not from a check made earlier), and every create, rename, remove, mode
//! and time change is made relative to such a handle (`openat`, `mkdirat`,
//! `renameat`, `unlinkat`, `fchmod` on a descriptor opened with
//! `O_NOFOLLOW`, `utimensat` with `AT_SYMLINK_NOFOLLOW`). A symlink that
//! appears anywhere on the way, whether the snapshot put it there, a case-
//! insensitive file system aliased it, or something swapped it in while the
//! restore ran, makes the operation fail instead of leading outside.
//!
//! Handles are cached per relative path for the length of one restore; a
//! cached handle pins the directory it was opened on, so later operations
//! cannot be redirected by a rename of a path component.
//!
//! Unix only (Linux, macOS). The rest of the engine is Unix-only as well
//! (it reads modes, inodes and ctimes); a Windows port would implement this
//! module with `NtCreateFile` relative handles and reparse-point checks.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

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

/// Cached directory handles below one root.
pub struct Dirs {
    root: Arc<OwnedFd>,
    cache: Mutex<HashMap<String, Arc<OwnedFd>>>,
    /// Most handles kept: half the descriptors the process may open.
    cap: usize,
}

impl Dirs {
    pub fn open(root: &Path) -> io::Result<Dirs> {
        let f = File::open(root)?;
        if !f.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "the workspace is not a directory",
            ));
        }
        Ok(Dirs {
            root: Arc::new(OwnedFd::from(f)),
            cache: Mutex::new(HashMap::new()),
            cap: (raise_fd_limit() / 2).clamp(64, 32768) as usize,
        })
    }

    /// The handle of the directory at relative path `rel` ("" is the root),
    /// every component opened without following symlinks.
    pub fn get(&self, rel: &str) -> io::Result<Arc<OwnedFd>> {
        if rel.is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(fd) = self.cache.lock().unwrap().get(rel) {
            return Ok(fd.clone());
        }
        let (parent, name) = split(rel);
        let pfd = self.get(parent)?;
        let fd = Arc::new(open_dir_at(pfd.as_raw_fd(), name)?);
        let mut cache = self.cache.lock().unwrap();
        if cache.len() > self.cap {
            // Bounded: descriptors are a limited resource.
            cache.clear();
        }
        cache.insert(rel.to_string(), fd.clone());
        Ok(fd)
    }

    /// Forget cached handles at or below `rel` (after it was renamed or
    /// removed).
    pub fn forget(&self, rel: &str) {
        let mut cache = self.cache.lock().unwrap();
        cache.retain(|k, _| !stateful_ci_protocol::format::is_within(k, rel));
    }
}

/// `("a/b", "c")` for `"a/b/c"`, `("", "c")` for `"c"`.
pub fn split(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

/// What `name` in `dir` is, without following a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    File,
    Dir,
    Symlink,
    Other,
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
    let c = cstr(name)?;
    // SAFETY: valid descriptor and name.
    let fd = unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd) })
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
    let t = times(mtime_ns);
    // SAFETY: valid descriptor and a two-element array.
    check(unsafe { libc::futimens(fd, t.as_ptr()) })
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

/// Raise the soft limit on open descriptors to the hard limit (macOS
/// starts processes at 256, Linux distributions at 1024; the hard limits are
/// far higher) and return the limit now in force.
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
