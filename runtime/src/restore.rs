//! `restore`: make the configured paths equal to a snapshot.
//!
//! Two phases keep a failed restore from damaging the workspace:
//!
//! 1. *Stage*: fetch every blob the workspace lacks, verify it against its
//!    hash, and write the files it belongs to under a private staging
//!    directory. Nothing outside the staging directory is touched, so a
//!    corrupt or unreachable store leaves the workspace exactly as it was.
//! 2. *Apply*: only when every file is staged, remove what the snapshot does
//!    not have, create directories, rename staged files into place and set
//!    metadata.
//!
//! Entries are confined to the configured paths: the manifest's paths are
//! validated, a path is never written through a symlink (an unexpected
//! symlink on disk is replaced, never followed), and credential files are
//! never written even if a hostile snapshot contains them.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use stateful_ci_protocol::format::is_within;
use stateful_ci_protocol::limits::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, CHUNK_THRESHOLD};
use stateful_ci_protocol::{BlobId, BlobLocation, Entry, EntryKind, Manifest, ObjectKey};

use crate::config::Config;
use crate::deny::is_denied;
use crate::error::{Error, Result, io_ctx};
use crate::objects::{decode_blob, load_manifest};
use crate::report::{Phase, Reporter};
use crate::scan::{Filter, Stat};
use crate::statindex::StatIndex;
use crate::store::{RestorePoint, Store};

const STAGING_PREFIX: &str = ".stateful-ci-staging-";
/// Neighbouring blobs of one pack are fetched in one request when the gap
/// between them is at most this.
const MAX_GAP: u64 = 1024 * 1024;
/// One ranged request reads at most this much.
const MAX_SPAN: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Refuse a snapshot that would write more than this many bytes.
    pub max_bytes: u64,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            max_bytes: 512 * 1024 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// No snapshot to restore from.
    Miss,
    Restored,
}

#[derive(Debug, Clone)]
pub struct RestoreSummary {
    pub outcome: RestoreOutcome,
    pub source: Option<RestorePoint>,
    pub files: u64,
    pub bytes: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    /// Stored (compressed) bytes read from the store.
    pub bytes_fetched: u64,
    pub objects_fetched: u64,
    pub removed: u64,
    pub skipped_credentials: u64,
    pub duration: Duration,
}

impl RestoreSummary {
    fn miss(started: Instant) -> Self {
        RestoreSummary {
            outcome: RestoreOutcome::Miss,
            source: None,
            files: 0,
            bytes: 0,
            files_written: 0,
            bytes_written: 0,
            bytes_fetched: 0,
            objects_fetched: 0,
            removed: 0,
            skipped_credentials: 0,
            duration: started.elapsed(),
        }
    }
}

/// What the disk has at an entry's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDisk {
    Missing,
    File(Stat),
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Already right.
    Keep,
    /// Content right, mode or mtime not.
    FixMeta,
    /// Needs to be (re)written.
    Write,
}

pub fn restore(
    workspace: &Path,
    config: &Config,
    store: &dyn Store,
    reporter: &dyn Reporter,
    opts: &RestoreOptions,
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let Some(point) = store.restore_point()? else {
        return Ok(RestoreSummary::miss(started));
    };
    let manifest = load_manifest(store, &point.head.snapshot)?;
    let filter = Filter::new(&config.exclude)?;
    clean_stale_staging(workspace);

    // Select what this configuration covers.
    let mut skipped_credentials = 0;
    let selected: Vec<&Entry> = manifest
        .entries
        .iter()
        .filter(|e| config.paths.iter().any(|p| is_within(&e.path, p)))
        .filter(|e| match check_filters(&e.path, &filter) {
            Skip::No => true,
            Skip::Excluded => false,
            Skip::Denied => {
                skipped_credentials += 1;
                false
            }
        })
        .collect();
    if skipped_credentials > 0 {
        reporter.warn(&format!(
            "the snapshot contains {skipped_credentials} credential file(s) that were not restored"
        ));
    }
    for root in &config.paths {
        check_root_ancestors(workspace, root)?;
    }

    // Compare with the disk.
    reporter.phase(Phase::Compare, None);
    let index = StatIndex::load(workspace);
    let locs: HashMap<BlobId, &BlobLocation> = manifest.blobs.iter().map(|b| (b.id, b)).collect();
    let plan: Vec<(OnDisk, Action)> = selected
        .par_iter()
        .map(|e| {
            let abs = workspace.join(&e.path);
            let disk = on_disk(&abs);
            let action = match (e.kind, disk) {
                (EntryKind::Dir, OnDisk::Dir) => Action::FixMeta,
                (EntryKind::Symlink, OnDisk::Symlink) => {
                    let same = fs::read_link(&abs).ok().is_some_and(|t| {
                        Some(t.as_os_str().as_bytes()) == e.target.as_deref().map(str::as_bytes)
                    });
                    if same { Action::FixMeta } else { Action::Write }
                }
                (EntryKind::File, OnDisk::File(st)) => {
                    let same = index
                        .lookup(&e.path, &st)
                        .is_some_and(|b| b == e.blobs.as_slice())
                        || (st.size == e.size
                            && hash_file(&abs).ok().as_deref() == Some(e.blobs.as_slice()));
                    match (
                        same,
                        st.mode & 0o777 == e.mode & 0o777 && st.mtime_ns == e.mtime_ns,
                    ) {
                        (true, true) => Action::Keep,
                        (true, false) => Action::FixMeta,
                        (false, _) => Action::Write,
                    }
                }
                _ => Action::Write,
            };
            (disk, action)
        })
        .collect();

    let to_write: Vec<usize> = (0..selected.len())
        .filter(|&i| selected[i].kind == EntryKind::File && plan[i].1 == Action::Write)
        .collect();
    let bytes_to_write: u64 = to_write.iter().map(|&i| selected[i].size).sum();
    if bytes_to_write > opts.max_bytes {
        return Err(Error::corrupt(format!(
            "snapshot {} would write {bytes_to_write} bytes, more than the limit of {}",
            point.head.snapshot, opts.max_bytes
        )));
    }
    check_free_space(workspace, bytes_to_write)?;

    // Stage.
    let staging = Staging::create(workspace)?;
    reporter.phase(Phase::Fetch, Some(bytes_to_write));
    let (bytes_fetched, objects_fetched) = stage_files(
        store, &manifest, &locs, &selected, &to_write, &staging, reporter,
    )?;

    // Apply.
    reporter.phase(Phase::Apply, None);
    let mut removed = 0;
    let present: HashSet<&str> = selected.iter().map(|e| e.path.as_str()).collect();
    for (i, e) in selected.iter().enumerate() {
        if e.kind == EntryKind::Dir && plan[i].0 == OnDisk::Dir {
            removed += prune_dir(workspace, &e.path, &present, &filter)?;
        }
    }
    let mut dirs_ok: HashSet<String> = HashSet::new();
    let mut new_index = StatIndex::default();
    for (i, e) in selected.iter().enumerate() {
        let abs = workspace.join(&e.path);
        let (disk, action) = plan[i];
        ensure_parents(workspace, &e.path, &config.paths, &mut dirs_ok)?;
        match e.kind {
            EntryKind::Dir => {
                if disk != OnDisk::Dir {
                    remove_any(&abs)?;
                    fs::create_dir(&abs).map_err(|err| io_ctx("create", &abs, err))?;
                }
                dirs_ok.insert(e.path.clone());
            }
            EntryKind::File => match action {
                Action::Write => {
                    if disk == OnDisk::Dir {
                        remove_any(&abs)?;
                    }
                    fs::rename(staging.file(i), &abs)
                        .map_err(|err| io_ctx("move into place", &abs, err))?;
                }
                Action::FixMeta => set_meta(&abs, e)?,
                Action::Keep => {}
            },
            EntryKind::Symlink => {
                if action == Action::Write {
                    let tmp = staging.file(i);
                    std::os::unix::fs::symlink(e.target.as_deref().unwrap_or_default(), &tmp)
                        .map_err(|err| io_ctx("create the symlink", &tmp, err))?;
                    if disk == OnDisk::Dir {
                        remove_any(&abs)?;
                    }
                    fs::rename(&tmp, &abs).map_err(|err| io_ctx("move into place", &abs, err))?;
                }
                set_mtime_nofollow(&abs, e.mtime_ns)
                    .map_err(|err| io_ctx("set the time of", &abs, err))?;
            }
        }
        if e.kind == EntryKind::File {
            let st = match (action, disk) {
                (Action::Keep, OnDisk::File(st)) => Some(st),
                _ => fs::symlink_metadata(&abs).ok().map(|m| Stat::of(&m)),
            };
            if let Some(st) = st {
                new_index.record_written(e.path.clone(), &st, e.blobs.clone());
            }
        }
    }
    // Directory times last, deepest first, since filling a directory
    // changes its mtime.
    for e in selected.iter().rev().filter(|e| e.kind == EntryKind::Dir) {
        set_meta(&workspace.join(&e.path), e)?;
    }
    drop(staging);

    new_index.base = Some((store.describe(), point.head.snapshot));
    if let Err(err) = new_index.store(workspace) {
        reporter.warn(&format!(
            "could not write the local stat index ({err}); the next save will re-read every file"
        ));
    }
    let files: Vec<&&Entry> = selected
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .collect();
    Ok(RestoreSummary {
        outcome: RestoreOutcome::Restored,
        source: Some(point),
        files: files.len() as u64,
        bytes: files.iter().map(|e| e.size).sum(),
        files_written: to_write.len() as u64,
        bytes_written: bytes_to_write,
        bytes_fetched,
        objects_fetched,
        removed,
        skipped_credentials,
        duration: started.elapsed(),
    })
}

enum Skip {
    No,
    Excluded,
    Denied,
}

/// Check a path and each of its parents against the excludes and the deny list.
fn check_filters(path: &str, filter: &Filter) -> Skip {
    let mut end = 0;
    loop {
        let next = path[end..].find('/').map(|i| end + i).unwrap_or(path.len());
        let prefix = &path[..next];
        if is_denied(prefix) {
            return Skip::Denied;
        }
        if filter.excluded(prefix) {
            return Skip::Excluded;
        }
        if next == path.len() {
            return Skip::No;
        }
        end = next + 1;
    }
}

fn on_disk(abs: &Path) -> OnDisk {
    match fs::symlink_metadata(abs) {
        Ok(m) if m.file_type().is_symlink() => OnDisk::Symlink,
        Ok(m) if m.is_file() => OnDisk::File(Stat::of(&m)),
        Ok(m) if m.is_dir() => OnDisk::Dir,
        Ok(_) => OnDisk::Other,
        Err(_) => OnDisk::Missing,
    }
}

/// The blob ids of a file on disk, chunked the way a save would.
fn hash_file(abs: &Path) -> std::io::Result<Vec<BlobId>> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(abs)?;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(Vec::new());
    }
    if len <= CHUNK_THRESHOLD {
        let data = fs::read(abs)?;
        return Ok(vec![BlobId::of(&data)]);
    }
    fastcdc::v2020::StreamCDC::new(&mut f, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
        .map(|c| {
            c.map(|c| BlobId::of(&c.data))
                .map_err(std::io::Error::other)
        })
        .collect()
}

/// The directories above a configured root belong to the repository: they
/// must be real directories (or absent), never symlinks leading elsewhere.
fn check_root_ancestors(workspace: &Path, root: &str) -> Result<()> {
    let mut cur = PathBuf::from(workspace);
    let comps: Vec<&str> = root.split('/').collect();
    for c in &comps[..comps.len() - 1] {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::user(
                    format!(
                        "cannot restore {root}: {} is not a directory (a symlink or file)",
                        cur.display()
                    ),
                    "restore only writes below real directories of the workspace; remove it or change `paths`",
                ));
            }
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Make sure every parent of `rel` is a real directory, replacing a symlink
/// or file inside a configured root and creating what is missing.
fn ensure_parents(
    workspace: &Path,
    rel: &str,
    roots: &[String],
    ok: &mut HashSet<String>,
) -> Result<()> {
    let Some(parent_end) = rel.rfind('/') else {
        return Ok(());
    };
    if ok.contains(&rel[..parent_end]) {
        return Ok(());
    }
    let mut end = 0;
    while let Some(i) = rel[end..].find('/') {
        let prefix = &rel[..end + i];
        end += i + 1;
        if ok.contains(prefix) {
            continue;
        }
        let abs = workspace.join(prefix);
        let inside_root = roots.iter().any(|r| is_within(prefix, r));
        match on_disk(&abs) {
            OnDisk::Dir => {}
            OnDisk::Missing => fs::create_dir(&abs).map_err(|e| io_ctx("create", &abs, e))?,
            _ if inside_root => {
                remove_any(&abs)?;
                fs::create_dir(&abs).map_err(|e| io_ctx("create", &abs, e))?;
            }
            _ => {
                return Err(Error::user(
                    format!("cannot restore {rel}: {} is not a directory", abs.display()),
                    "remove it, or change `paths` so it is not above a configured path",
                ));
            }
        }
        ok.insert(prefix.to_string());
    }
    Ok(())
}

/// Remove children of `dir` that the snapshot does not have.
fn prune_dir(workspace: &Path, dir: &str, present: &HashSet<&str>, filter: &Filter) -> Result<u64> {
    let abs = workspace.join(dir);
    let mut removed = 0;
    for ent in fs::read_dir(&abs).map_err(|e| io_ctx("list", &abs, e))? {
        let ent = ent.map_err(|e| io_ctx("list", &abs, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let rel = format!("{dir}/{name}");
        if present.contains(rel.as_str()) || is_denied(&rel) || filter.excluded(&rel) {
            continue;
        }
        remove_any(&ent.path())?;
        removed += 1;
    }
    Ok(removed)
}

/// Remove a file, symlink or directory tree, never following symlinks.
fn remove_any(abs: &Path) -> Result<()> {
    let res = match fs::symlink_metadata(abs) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(abs),
        Ok(_) => fs::remove_file(abs),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    res.map_err(|e| io_ctx("remove", abs, e))
}

fn set_meta(abs: &Path, e: &Entry) -> Result<()> {
    fs::set_permissions(abs, fs::Permissions::from_mode(e.mode & 0o777))
        .map_err(|err| io_ctx("set the mode of", abs, err))?;
    set_mtime_nofollow(abs, e.mtime_ns).map_err(|err| io_ctx("set the time of", abs, err))
}

fn set_mtime_nofollow(abs: &Path, ns: i64) -> std::io::Result<()> {
    let c = CString::new(abs.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
            tv_nsec: ns.rem_euclid(1_000_000_000) as _,
        },
    ];
    // SAFETY: valid NUL-terminated path and a two-element timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn check_free_space(workspace: &Path, need: u64) -> Result<()> {
    let c = CString::new(workspace.as_os_str().as_bytes())
        .map_err(|e| Error::workspace(e.to_string()))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and an out-parameter of the right type.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Ok(());
    }
    let avail = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    if need > avail {
        return Err(Error::workspace(format!(
            "the snapshot needs {need} bytes but only {avail} are free under {}",
            workspace.display()
        ))
        .with_hint("free disk space on the runner, or restore fewer paths"));
    }
    Ok(())
}

/// A private directory in the workspace where files are staged; removed
/// with everything in it when dropped.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn create(workspace: &Path) -> Result<Staging> {
        let dir = workspace.join(format!("{STAGING_PREFIX}{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_ctx("create", &dir, e))?;
        Ok(Staging { dir })
    }

    fn file(&self, i: usize) -> PathBuf {
        self.dir.join(i.to_string())
    }
}

use std::os::unix::fs::DirBuilderExt;

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Remove staging directories left by restores that were killed.
fn clean_stale_staging(workspace: &Path) {
    let Ok(rd) = fs::read_dir(workspace) else {
        return;
    };
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(STAGING_PREFIX)) else {
            continue;
        };
        let alive = pid.parse::<i32>().is_ok_and(|pid| {
            // SAFETY: signal 0 only checks whether the process exists.
            pid == std::process::id() as i32 || unsafe { libc::kill(pid, 0) } == 0
        });
        if !alive {
            let _ = fs::remove_dir_all(ent.path());
        }
    }
}

/// One ranged read of a pack and the blobs it covers.
struct Fetch<'a> {
    pack: ObjectKey,
    start: u64,
    end: u64,
    blobs: Vec<&'a BlobLocation>,
}

/// Fetch, verify and write every blob of the files in `to_write` into the
/// staging directory. Returns stored bytes and requests used.
fn stage_files(
    store: &dyn Store,
    manifest: &Manifest,
    locs: &HashMap<BlobId, &BlobLocation>,
    selected: &[&Entry],
    to_write: &[usize],
    staging: &Staging,
    reporter: &dyn Reporter,
) -> Result<(u64, u64)> {
    // Where each blob goes: (entry index, offset, whole-file?).
    let mut targets: HashMap<BlobId, Vec<(usize, u64, bool)>> = HashMap::new();
    for &i in to_write {
        let e = selected[i];
        let path = staging.file(i);
        if e.blobs.len() != 1 {
            // Empty or multi-blob: create it now at full size.
            let f = File::create(&path).map_err(|err| io_ctx("create", &path, err))?;
            f.set_len(e.size)
                .map_err(|err| io_ctx("size", &path, err))?;
        }
        let mut off = 0;
        for id in &e.blobs {
            let loc = locs
                .get(id)
                .ok_or_else(|| Error::corrupt(format!("{}: blob {id} has no location", e.path)))?;
            targets
                .entry(*id)
                .or_default()
                .push((i, off, e.blobs.len() == 1));
            off += loc.raw_len;
        }
    }

    // Group into ranged reads per pack.
    let mut by_pack: HashMap<u32, Vec<&BlobLocation>> = HashMap::new();
    for id in targets.keys() {
        let loc = locs[id];
        by_pack.entry(loc.pack).or_default().push(loc);
    }
    let mut fetches = Vec::new();
    for (pack, mut blobs) in by_pack {
        blobs.sort_by_key(|b| b.offset);
        let key = manifest.packs[pack as usize];
        let mut cur: Option<Fetch> = None;
        for b in blobs {
            let end = b.offset + b.length;
            match &mut cur {
                Some(f)
                    if b.offset <= f.end + MAX_GAP
                        && end - f.start <= MAX_SPAN
                        && b.offset >= f.end =>
                {
                    f.end = end;
                    f.blobs.push(b);
                }
                _ => {
                    if let Some(f) = cur.take() {
                        fetches.push(f);
                    }
                    cur = Some(Fetch {
                        pack: key,
                        start: b.offset,
                        end,
                        blobs: vec![b],
                    });
                }
            }
        }
        fetches.extend(cur);
    }
    // Big reads first keeps the cores busy to the end.
    fetches.sort_by_key(|f| std::cmp::Reverse(f.end - f.start));

    let fetched: u64 = fetches.iter().map(|f| f.end - f.start).sum();
    let requests = fetches.len() as u64;
    // Network stores want more requests in flight than there are cores.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(store.parallelism().max(1))
        .build()
        .map_err(|e| Error::workspace(format!("cannot start transfer threads: {e}")))?;
    pool.install(|| {
        fetches.par_iter().try_for_each(|f| -> Result<()> {
            let data = store.get(&f.pack, Some(f.start..f.end))?;
            if data.len() as u64 != f.end - f.start {
                return Err(Error::corrupt(format!("{} returned a short range", f.pack)));
            }
            for b in &f.blobs {
                let lo = (b.offset - f.start) as usize;
                let plain = decode_blob(b, &data[lo..lo + b.length as usize])?;
                for &(i, off, whole) in &targets[&b.id] {
                    let path = staging.file(i);
                    if whole {
                        let mut out = OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .custom_flags(libc::O_NOFOLLOW)
                            .open(&path)
                            .map_err(|err| io_ctx("create", &path, err))?;
                        out.write_all(&plain)
                            .map_err(|err| io_ctx("write", &path, err))?;
                    } else {
                        let out = OpenOptions::new()
                            .write(true)
                            .custom_flags(libc::O_NOFOLLOW)
                            .open(&path)
                            .map_err(|err| io_ctx("open", &path, err))?;
                        out.write_all_at(&plain, off)
                            .map_err(|err| io_ctx("write", &path, err))?;
                    }
                    reporter.advance(plain.len() as u64);
                }
            }
            Ok(())
        })
    })?;
    // Metadata on the staged files, so the rename brings it along.
    to_write
        .par_iter()
        .try_for_each(|&i| set_meta(&staging.file(i), selected[i]))?;
    Ok((fetched, requests))
}
