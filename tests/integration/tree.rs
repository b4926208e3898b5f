//! Exact comparison of directory trees: kind, permission bits, mtime (ns),
//! content and symlink target of every entry.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub mtime_ns: i64,
    pub content: Option<blake3::Hash>,
    pub target: Option<String>,
}

/// Every entry below `root` (relative path → node). `skip` names are left out.
pub fn snapshot(root: &Path, skip: &[&str]) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, skip, &mut out);
    out
}

fn walk(base: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<String, Node>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for ent in rd {
        let ent = ent.unwrap();
        let name = ent.file_name().to_string_lossy().into_owned();
        if skip.contains(&name.as_str()) {
            continue;
        }
        let p = ent.path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
        let mtime_ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
        let node = if m.file_type().is_symlink() {
            Node {
                kind: "symlink",
                mode: 0,
                mtime_ns,
                content: None,
                target: Some(
                    std::fs::read_link(&p)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                ),
            }
        } else if m.is_dir() {
            walk(base, &p, skip, out);
            Node {
                kind: "dir",
                mode: m.mode() & 0o777,
                mtime_ns,
                content: None,
                target: None,
            }
        } else {
            Node {
                kind: "file",
                mode: m.mode() & 0o777,
                mtime_ns,
                content: Some(blake3::hash(&std::fs::read(&p).unwrap())),
                target: None,
            }
        };
        out.insert(rel, node);
    }
}

/// Assert two trees are identical, with a readable difference.
pub fn assert_same(a: &Path, b: &Path, skip: &[&str]) {
    let (ta, tb) = (snapshot(a, skip), snapshot(b, skip));
    let mut diffs = Vec::new();
    for (k, v) in &ta {
        match tb.get(k) {
            None => diffs.push(format!("missing in {}: {k}", b.display())),
            Some(w) if w != v => diffs.push(format!("differs: {k}: {v:?} vs {w:?}")),
            _ => {}
        }
    }
    for k in tb.keys().filter(|k| !ta.contains_key(*k)) {
        diffs.push(format!("extra in {}: {k}", b.display()));
    }
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}
