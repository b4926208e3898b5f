//! The Windows side of [`crate::fsat`]: `NtCreateFile` relative to a
//! directory handle, one name at a time, with `FILE_OPEN_REPARSE_POINT`,
//! so a symlink or junction is opened as itself and never traversed; what
//! is opened to be written into is checked on its handle and refused when
//! it is a symlink or junction. See the parent module for what Windows
//! cannot give (mode bits; symlinks are created by path).

use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::mem::{ManuallyDrop, offset_of, size_of};
use std::os::windows::ffi::OsStrExt;
use std::os::windows::fs::{MetadataExt, OpenOptionsExt};
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
pub use std::os::windows::io::{OwnedHandle as Handle, RawHandle as RawFd};
use std::path::Path;
use std::time::{Duration, SystemTime};

use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::{
    FILE_CREATE, FILE_DIRECTORY_FILE, FILE_NON_DIRECTORY_FILE, FILE_OPEN,
    FILE_OPEN_FOR_BACKUP_INTENT, FILE_OPEN_REPARSE_POINT, FILE_RENAME_INFORMATION,
    FILE_SYNCHRONOUS_IO_NONALERT, FileRenameInformation, NtCreateFile, NtSetInformationFile,
};
use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_DIRECTORY, ERROR_NO_MORE_FILES, ERROR_PATH_NOT_FOUND,
    ERROR_STOPPED_ON_SYMLINK, OBJ_CASE_INSENSITIVE, RtlNtStatusToDosError, STILL_ACTIVE,
    UNICODE_STRING,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateSymbolicLinkW, DELETE, FILE_ATTRIBUTE_NORMAL, FILE_ATTRIBUTE_READONLY,
    FILE_DISPOSITION_FLAG_DELETE, FILE_DISPOSITION_FLAG_IGNORE_READONLY_ATTRIBUTE,
    FILE_DISPOSITION_FLAG_POSIX_SEMANTICS, FILE_DISPOSITION_INFO, FILE_DISPOSITION_INFO_EX,
    FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OPEN_REPARSE_POINT, FILE_FULL_DIR_INFO,
    FILE_GENERIC_READ, FILE_GENERIC_WRITE, FILE_LIST_DIRECTORY, FILE_READ_ATTRIBUTES,
    FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE, FILE_TRAVERSE, FILE_WRITE_ATTRIBUTES,
    FileDispositionInfo, FileDispositionInfoEx, FileFullDirectoryInfo,
    FileFullDirectoryRestartInfo, GetDiskFreeSpaceExW, GetFileInformationByHandleEx,
    GetFinalPathNameByHandleW, LOCKFILE_EXCLUSIVE_LOCK, LockFileEx,
    SYMBOLIC_LINK_FLAG_ALLOW_UNPRIVILEGED_CREATE, SYMBOLIC_LINK_FLAG_DIRECTORY, SYNCHRONIZE,
    SetFileInformationByHandle,
};
use windows_sys::Win32::System::IO::{IO_STATUS_BLOCK, OVERLAPPED};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
};

use super::Kind;
use crate::scan::Stat;

/// The raw handle a `*_at` call takes (what `as_raw_fd` is on Unix), so the
/// engine's calls read the same on both platforms.
pub trait AsRawFd {
    fn as_raw_fd(&self) -> RawFd;
}

impl<T: AsRawHandle> AsRawFd for T {
    fn as_raw_fd(&self) -> RawFd {
        self.as_raw_handle()
    }
}

const SHARE_ALL: u32 = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;

/// The error for "this is a symlink or junction and will not be followed".
fn refused() -> io::Error {
    io::Error::from_raw_os_error(ERROR_STOPPED_ON_SYMLINK as i32)
}

/// Names the Windows layer accepts: one component; `:` would name an NTFS
/// alternate data stream of another file.
fn check_name(name: &str, allow_empty: bool) -> io::Result<()> {
    if (name.is_empty() && !allow_empty)
        || name.contains(['\\', '/', ':', '\0'])
        || name == "."
        || name == ".."
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} cannot be a file name on Windows"),
        ));
    }
    Ok(())
}

/// `NtCreateFile(RootDirectory = dir, ObjectName = name)`, never traversing
/// a reparse point at `name` (the name is a single component, so nothing
/// else on the way is resolved). An empty name opens `dir` itself again.
fn nt_open(
    dir: RawFd,
    name: &str,
    access: u32,
    share: u32,
    disposition: u32,
    options: u32,
) -> io::Result<OwnedHandle> {
    check_name(name, true)?;
    let wide: Vec<u16> = name.encode_utf16().collect();
    let bytes = u16::try_from(wide.len() * 2)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file name too long"))?;
    let us = UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: wide.as_ptr() as *mut u16,
    };
    let oa = OBJECT_ATTRIBUTES {
        Length: size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: dir,
        ObjectName: &us,
        // Like every Win32 call: names compare without case.
        Attributes: OBJ_CASE_INSENSITIVE,
        SecurityDescriptor: std::ptr::null(),
        SecurityQualityOfService: std::ptr::null(),
    };
    let mut handle = std::ptr::null_mut();
    // SAFETY: zeroed IO_STATUS_BLOCK is a valid out-parameter.
    let mut iosb: IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
    // SAFETY: every pointer is valid for the call; `wide` outlives it.
    let status = unsafe {
        NtCreateFile(
            &mut handle,
            access | SYNCHRONIZE | FILE_READ_ATTRIBUTES,
            &oa,
            &mut iosb,
            std::ptr::null(),
            FILE_ATTRIBUTE_NORMAL,
            share,
            disposition,
            options
                | FILE_OPEN_REPARSE_POINT
                | FILE_SYNCHRONOUS_IO_NONALERT
                | FILE_OPEN_FOR_BACKUP_INTENT,
            std::ptr::null(),
            0,
        )
    };
    if status < 0 {
        return Err(nt_error(status));
    }
    // SAFETY: a fresh handle we own.
    Ok(unsafe { OwnedHandle::from_raw_handle(handle) })
}

fn nt_error(status: i32) -> io::Error {
    // SAFETY: a pure conversion.
    io::Error::from_raw_os_error(unsafe { RtlNtStatusToDosError(status) } as i32)
}

/// The handle as a `File` for std's handle-based calls, not closed on drop.
fn as_file(h: RawFd) -> ManuallyDrop<File> {
    // SAFETY: the caller keeps the handle open for as long as this is used.
    ManuallyDrop::new(unsafe { File::from_raw_handle(h) })
}

/// Whether the opened object is a symlink or junction (a name-surrogate
/// reparse point: std's `is_symlink`).
fn is_link(h: RawFd) -> io::Result<bool> {
    Ok(as_file(h).metadata()?.file_type().is_symlink())
}

fn no_link(h: OwnedHandle) -> io::Result<OwnedHandle> {
    if is_link(h.as_raw_handle())? {
        return Err(refused());
    }
    Ok(h)
}

/// The workspace's own handle (the workspace itself may be reached through
/// a symlink: it is the user's choice, not the snapshot's).
pub fn open_root(root: &Path) -> io::Result<Handle> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(root)?;
    if !f.metadata()?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "the workspace is not a directory",
        ));
    }
    Ok(OwnedHandle::from(f))
}

/// Open `name` in `dir` as a directory, refusing a symlink or junction.
pub fn open_dir_at(dir: RawFd, name: &str) -> io::Result<OwnedHandle> {
    check_name(name, false)?;
    let h = nt_open(
        dir,
        name,
        FILE_LIST_DIRECTORY | FILE_TRAVERSE,
        SHARE_ALL,
        FILE_OPEN,
        FILE_DIRECTORY_FILE,
    )?;
    no_link(h)
}

/// What `name` in `dir` is, without following a symlink or junction.
pub fn kind_at(dir: RawFd, name: &str) -> io::Result<Kind> {
    check_name(name, false)?;
    let h = match nt_open(dir, name, 0, SHARE_ALL, FILE_OPEN, 0) {
        Ok(h) => h,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.raw_os_error() == Some(ERROR_PATH_NOT_FOUND as i32) =>
        {
            return Ok(Kind::Missing);
        }
        Err(e) => return Err(e),
    };
    let ft = as_file(h.as_raw_handle()).metadata()?.file_type();
    Ok(Kind::of(ft))
}

/// [`create_file_at`]; Windows has no mode bits to set (see the module doc).
pub fn create_file_with_mode_at(dir: RawFd, name: &str, _mode: u32) -> io::Result<File> {
    create_file_at(dir, name)
}

/// Set only the modification time of an open file.
pub fn set_mtime_fd(fd: RawFd, mtime_ns: i64) -> io::Result<()> {
    set_meta_fd(fd, 0, mtime_ns)
}

/// Create a new file (never an existing one, never through a link).
pub fn create_file_at(dir: RawFd, name: &str) -> io::Result<File> {
    check_name(name, false)?;
    let h = nt_open(
        dir,
        name,
        FILE_GENERIC_WRITE | FILE_GENERIC_READ,
        SHARE_ALL,
        FILE_CREATE,
        FILE_NON_DIRECTORY_FILE,
    )?;
    Ok(File::from(h))
}

/// Open an existing regular file, refusing a symlink.
pub fn open_file_at(dir: RawFd, name: &str, write: bool) -> io::Result<File> {
    check_name(name, false)?;
    let access = if write {
        FILE_GENERIC_WRITE
    } else {
        FILE_GENERIC_READ
    };
    let h = no_link(nt_open(
        dir,
        name,
        access,
        SHARE_ALL,
        FILE_OPEN,
        FILE_NON_DIRECTORY_FILE,
    )?)?;
    let f = File::from(h);
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// Create a directory (`mode` has no meaning on Windows).
pub fn mkdir_at(dir: RawFd, name: &str, _mode: u32) -> io::Result<()> {
    check_name(name, false)?;
    nt_open(
        dir,
        name,
        FILE_LIST_DIRECTORY,
        SHARE_ALL,
        FILE_CREATE,
        FILE_DIRECTORY_FILE,
    )
    .map(drop)
}

fn wide(s: &std::ffi::OsStr) -> Vec<u16> {
    s.encode_wide().chain(Some(0)).collect()
}

/// The full path of an open handle (`\\?\C:\...`).
fn final_path(h: RawFd) -> io::Result<std::path::PathBuf> {
    let mut buf = vec![0u16; 512];
    loop {
        // SAFETY: valid handle and buffer of the given length.
        let n = unsafe { GetFinalPathNameByHandleW(h, buf.as_mut_ptr(), buf.len() as u32, 0) };
        if n == 0 {
            return Err(io::Error::last_os_error());
        }
        if (n as usize) < buf.len() {
            buf.truncate(n as usize);
            use std::os::windows::ffi::OsStringExt;
            return Ok(std::ffi::OsString::from_wide(&buf).into());
        }
        buf.resize(n as usize + 1, 0);
    }
}

/// Create a symlink `name` in `dir` pointing at `target`. Windows creates
/// symlinks by path only: the path is taken from a second handle on `dir`
/// opened without delete sharing, which keeps `dir` from being renamed or
/// removed until the link exists.
pub fn symlink_at(target: &str, dir: RawFd, name: &str) -> io::Result<()> {
    check_name(name, false)?;
    let pin = nt_open(
        dir,
        "",
        FILE_LIST_DIRECTORY,
        FILE_SHARE_READ | FILE_SHARE_WRITE,
        FILE_OPEN,
        FILE_DIRECTORY_FILE,
    )?;
    let parent = final_path(pin.as_raw_handle())?;
    let link = parent.join(name);
    let target = target.replace('/', "\\");
    // A directory link when the target is a directory now (Windows links
    // are typed); a dangling one is a file link, as `ln -s` on Windows
    // tools makes it.
    let is_dir = std::fs::metadata(parent.join(&target)).is_ok_and(|m| m.is_dir());
    let base = if is_dir {
        SYMBOLIC_LINK_FLAG_DIRECTORY
    } else {
        0
    };
    let (l, t) = (wide(link.as_os_str()), wide(std::ffi::OsStr::new(&target)));
    // SAFETY: NUL-terminated wide strings.
    let mut ok = unsafe {
        CreateSymbolicLinkW(
            l.as_ptr(),
            t.as_ptr(),
            base | SYMBOLIC_LINK_FLAG_ALLOW_UNPRIVILEGED_CREATE,
        )
    };
    if !ok {
        // Windows before 10 1703 rejects the unprivileged flag.
        // SAFETY: as above.
        ok = unsafe { CreateSymbolicLinkW(l.as_ptr(), t.as_ptr(), base) };
    }
    drop(pin);
    if ok {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Rename `from` in `from_dir` (the link itself when it is one) to `to` in
/// `to_dir`, replacing a file or link there.
pub fn rename_at(from_dir: RawFd, from: &str, to_dir: RawFd, to: &str) -> io::Result<()> {
    check_name(from, false)?;
    check_name(to, false)?;
    let h = nt_open(from_dir, from, DELETE, SHARE_ALL, FILE_OPEN, 0)?;
    let name: Vec<u16> = to.encode_utf16().collect();
    let head = offset_of!(FILE_RENAME_INFORMATION, FileName);
    let len = head + name.len() * 2;
    // u64 words: aligned for the structure.
    let mut buf = vec![0u64; len.div_ceil(8) + 1];
    let info = buf.as_mut_ptr() as *mut FILE_RENAME_INFORMATION;
    // SAFETY: `buf` is large enough and aligned; the name is copied in
    // after the fixed part.
    unsafe {
        (*info).Anonymous.ReplaceIfExists = true;
        (*info).RootDirectory = to_dir;
        (*info).FileNameLength = (name.len() * 2) as u32;
        std::ptr::copy_nonoverlapping(
            name.as_ptr(),
            (info as *mut u8).add(head) as *mut u16,
            name.len(),
        );
    }
    // SAFETY: zeroed IO_STATUS_BLOCK is a valid out-parameter.
    let mut iosb: IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
    // SAFETY: valid handle and buffer of `len` bytes.
    let status = unsafe {
        NtSetInformationFile(
            h.as_raw_handle(),
            &mut iosb,
            info as *const c_void,
            len as u32,
            FileRenameInformation,
        )
    };
    if status < 0 {
        return Err(nt_error(status));
    }
    Ok(())
}

/// Delete `name` in `dir` by handle (the link itself when it is one).
fn delete_at(dir: RawFd, name: &str, is_dir: bool) -> io::Result<()> {
    let options = if is_dir { FILE_DIRECTORY_FILE } else { 0 };
    let h = nt_open(dir, name, DELETE, SHARE_ALL, FILE_OPEN, options)?;
    if is_dir && is_link(h.as_raw_handle())? {
        return Err(refused());
    }
    let ex = FILE_DISPOSITION_INFO_EX {
        Flags: FILE_DISPOSITION_FLAG_DELETE
            | FILE_DISPOSITION_FLAG_POSIX_SEMANTICS
            | FILE_DISPOSITION_FLAG_IGNORE_READONLY_ATTRIBUTE,
    };
    // SAFETY: valid handle and structure.
    let ok = unsafe {
        SetFileInformationByHandle(
            h.as_raw_handle(),
            FileDispositionInfoEx,
            &ex as *const _ as *const c_void,
            size_of::<FILE_DISPOSITION_INFO_EX>() as u32,
        )
    };
    if ok != 0 {
        return Ok(());
    }
    // Older Windows, FAT volumes: the classic deletion on close.
    let classic = FILE_DISPOSITION_INFO { DeleteFile: true };
    // SAFETY: as above.
    let ok = unsafe {
        SetFileInformationByHandle(
            h.as_raw_handle(),
            FileDispositionInfo,
            &classic as *const _ as *const c_void,
            size_of::<FILE_DISPOSITION_INFO>() as u32,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Remove whatever `name` is (a directory with everything in it), never
/// following a symlink or junction (a link is removed, not its target).
/// Missing is fine.
pub fn remove_at(dir: RawFd, name: &str) -> io::Result<()> {
    match kind_at(dir, name)? {
        Kind::Missing => Ok(()),
        Kind::Dir => {
            {
                let sub = open_dir_at(dir, name)?;
                for n in read_names(sub.as_raw_handle())? {
                    remove_at(sub.as_raw_handle(), &n)?;
                }
            }
            delete_at(dir, name, true)
        }
        _ => delete_at(dir, name, false),
    }
}

/// Remove an empty directory (used to roll back directories we created).
pub fn rmdir_at(dir: RawFd, name: &str) -> io::Result<()> {
    check_name(name, false)?;
    delete_at(dir, name, true)
}

/// The names in a directory (not `.` or `..`), listed through a fresh
/// handle on it (its own listing position, so the caller's handle stays
/// usable). Names that are not valid UTF-16 are returned lossily and so
/// never match a snapshot path.
pub fn read_names(dir: RawFd) -> io::Result<Vec<String>> {
    let h = nt_open(
        dir,
        "",
        FILE_LIST_DIRECTORY,
        SHARE_ALL,
        FILE_OPEN,
        FILE_DIRECTORY_FILE,
    )?;
    let mut buf = vec![0u64; 8192];
    let mut out = Vec::new();
    let mut class = FileFullDirectoryRestartInfo;
    loop {
        // SAFETY: valid handle and an aligned buffer of the given size.
        let ok = unsafe {
            GetFileInformationByHandleEx(
                h.as_raw_handle(),
                class,
                buf.as_mut_ptr() as *mut c_void,
                (buf.len() * 8) as u32,
            )
        };
        if ok == 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(ERROR_NO_MORE_FILES as i32) {
                break;
            }
            return Err(e);
        }
        class = FileFullDirectoryInfo;
        let base = buf.as_ptr() as *const u8;
        let mut off = 0usize;
        loop {
            // SAFETY: the system wrote a chain of records into `buf`; each
            // offset it gives stays inside it.
            let (next, name) = unsafe {
                let rec = base.add(off) as *const FILE_FULL_DIR_INFO;
                let n = (*rec).FileNameLength as usize / 2;
                let p = base.add(off + offset_of!(FILE_FULL_DIR_INFO, FileName)) as *const u16;
                (
                    (*rec).NextEntryOffset as usize,
                    String::from_utf16_lossy(std::slice::from_raw_parts(p, n)),
                )
            };
            if name != "." && name != ".." {
                out.push(name);
            }
            if next == 0 {
                break;
            }
            off += next;
        }
    }
    Ok(out)
}

fn system_time(ns: i64) -> SystemTime {
    let d = Duration::new(
        ns.unsigned_abs() / 1_000_000_000,
        (ns.unsigned_abs() % 1_000_000_000) as u32,
    );
    if ns >= 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    }
}

/// Set the mtime through an open handle (no path, no link). Windows has
/// no mode bits: `mode` is not applied (see the module's documentation).
pub fn set_meta_fd(fd: RawFd, _mode: u32, mtime_ns: i64) -> io::Result<()> {
    as_file(fd).set_modified(system_time(mtime_ns))
}

/// Set the mtime of `name` itself (a link's own time), never following.
pub fn set_mtime_nofollow_at(dir: RawFd, name: &str, mtime_ns: i64) -> io::Result<()> {
    check_name(name, false)?;
    let h = nt_open(dir, name, FILE_WRITE_ATTRIBUTES, SHARE_ALL, FILE_OPEN, 0)?;
    set_meta_fd(h.as_raw_handle(), 0, mtime_ns)
}

/// Set the mtime of an existing file or directory `name`, refusing a link.
pub fn set_meta_at(
    dir: RawFd,
    name: &str,
    is_dir: bool,
    mode: u32,
    mtime_ns: i64,
) -> io::Result<()> {
    check_name(name, false)?;
    let options = if is_dir {
        FILE_DIRECTORY_FILE
    } else {
        FILE_NON_DIRECTORY_FILE
    };
    let h = no_link(nt_open(
        dir,
        name,
        FILE_WRITE_ATTRIBUTES,
        SHARE_ALL,
        FILE_OPEN,
        options,
    )?)?;
    set_meta_fd(h.as_raw_handle(), mode, mtime_ns)
}

/// Open a file to read it, refusing a symlink or junction.
pub fn open_nofollow(abs: &Path) -> io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(abs)?;
    if f.metadata()?.file_type().is_symlink() {
        return Err(refused());
    }
    Ok(f)
}

/// The error an operation gets when it meets a link it will not follow.
pub fn is_loop(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ERROR_STOPPED_ON_SYMLINK as i32)
}

/// The error an operation gets when a path component is not a directory.
pub fn is_not_dir(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ERROR_DIRECTORY as i32)
}

/// Write all of `buf` at offset `off`.
pub fn write_all_at(f: &File, mut buf: &[u8], mut off: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_write(buf, off) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Nothing on Windows: there is no call that flushes a directory's entries
/// (`File::open` on a directory fails with "Access denied", which failed
/// every head update of a local store when it synced `heads/` that way);
/// the rename's durability is left to NTFS's metadata journal.
pub fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Bytes available to this user on the volume holding `path`.
pub fn free_space(path: &Path) -> Option<u64> {
    let p = wide(path.as_os_str());
    let mut avail = 0u64;
    // SAFETY: NUL-terminated path and a valid out-parameter; the others may
    // be null.
    let ok = unsafe {
        GetDiskFreeSpaceExW(
            p.as_ptr(),
            &mut avail,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    (ok != 0).then_some(avail)
}

/// Whether a process with this id is running.
pub fn process_alive(pid: u32) -> bool {
    // SAFETY: plain calls; the handle is closed.
    unsafe {
        let h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if h.is_null() {
            return false;
        }
        let mut code = 0u32;
        let ok = GetExitCodeProcess(h, &mut code);
        CloseHandle(h);
        ok != 0 && code == STILL_ACTIVE as u32
    }
}

/// Block until this process holds the exclusive lock on `f` (released on
/// close).
pub fn lock_exclusive(f: &File) -> io::Result<()> {
    // SAFETY: zeroed OVERLAPPED is valid (offset 0).
    let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
    // SAFETY: valid handle and OVERLAPPED.
    let ok = unsafe {
        LockFileEx(
            f.as_raw_handle(),
            LOCKFILE_EXCLUSIVE_LOCK,
            0,
            u32::MAX,
            u32::MAX,
            &mut ov,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What a Windows `lstat` gives the engine: no inode (0), the last-write
/// time for both times (`ctime` is not in std's Windows metadata), and a
/// mode made up from the read-only attribute.
pub fn stat_of(m: &std::fs::Metadata) -> Stat {
    // FILETIME: 100 ns ticks since 1601-01-01.
    const EPOCH_DIFF_100NS: i64 = 116_444_736_000_000_000;
    let mtime_ns = (m.last_write_time() as i64 - EPOCH_DIFF_100NS).saturating_mul(100);
    let ro = m.file_attributes() & FILE_ATTRIBUTE_READONLY != 0;
    let mode = match (m.is_dir(), ro) {
        (true, false) => 0o755,
        (true, true) => 0o555,
        (false, false) => 0o644,
        (false, true) => 0o444,
    };
    Stat {
        size: if m.is_file() { m.len() } else { 0 },
        mtime_ns,
        ctime_ns: mtime_ns,
        ino: 0,
        mode,
    }
}

/// Windows has no small per-process handle limit like Unix's descriptor
/// limit (handles are bounded by memory, about 16 million): the handle
/// cache keeps as many as on a generous Unix.
pub fn raise_fd_limit() -> u64 {
    65536
}

/// A directory opened for the save's walk ([`crate::scan`]). On Windows the
/// listing already carries each entry's metadata (`FindNextFileW`), so this
/// is std's `read_dir` by path, as before: no call per entry to save.
pub struct WalkDir(std::path::PathBuf);

/// One entry listed by [`WalkDir::list`], with its metadata.
pub struct Listed(std::fs::DirEntry, std::ffi::OsString);

impl Listed {
    pub fn name(&self) -> &std::ffi::OsStr {
        &self.1
    }
}

impl WalkDir {
    pub fn open(abs: &Path) -> io::Result<WalkDir> {
        Ok(WalkDir(abs.to_path_buf()))
    }

    pub fn open_child(&self, l: &Listed) -> io::Result<WalkDir> {
        Ok(WalkDir(l.0.path()))
    }

    pub fn list(&self) -> io::Result<Vec<Listed>> {
        std::fs::read_dir(&self.0)?
            .map(|e| {
                e.map(|e| {
                    let name = e.file_name();
                    Listed(e, name)
                })
            })
            .collect()
    }

    /// What `l` is (a symlink or junction as itself) and its metadata.
    pub fn stat(&self, l: &Listed) -> io::Result<(Kind, Stat)> {
        let m = l.0.metadata()?;
        Ok((Kind::of(m.file_type()), stat_of(&m)))
    }

    pub fn read_link(&self, l: &Listed) -> io::Result<std::ffi::OsString> {
        std::fs::read_link(l.0.path()).map(|p| p.into_os_string())
    }
}
