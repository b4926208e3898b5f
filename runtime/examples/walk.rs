//! Times the save's walk of one root, to compare the streamed walk with
//! collecting it (and, built from an older tree, with the walk before it):
//!
//!     cargo build --release -p stateful-ci-runtime --example walk
//!     target/release/examples/walk WORKSPACE ROOT [stream|collect|digest] [RUNS]
//!
//! `stream` pulls batches of 4,096 entries and drops them (what bounds the
//! walk's memory: measure it with `/usr/bin/time -f %M`); `collect` is
//! [`scan`], every entry held at once; `digest` prints a hash of every
//! entry (path, kind, stat, target) in the order returned, to compare two
//! builds' walks.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Instant;

use stateful_ci_runtime::scan::{Filter, SortedWalk, scan};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: walk WORKSPACE ROOT [stream|collect|digest] [RUNS]");
        std::process::exit(2);
    }
    let workspace = PathBuf::from(&args[1]);
    let roots = [args[2].clone()];
    let mode = args.get(3).map_or("stream", String::as_str);
    let runs: usize = args.get(4).map_or(1, |n| n.parse().expect("RUNS"));
    let filter = Filter::new(&[]).expect("no excludes");
    for _ in 0..runs {
        let t = Instant::now();
        let entries = match mode {
            "stream" => {
                let mut walk = SortedWalk::start(&workspace, &roots, &filter);
                let mut n = 0;
                while let Some(batch) = walk.next_batch(4096).expect("walk") {
                    n += batch.len();
                }
                walk.finish().expect("walk");
                n
            }
            "collect" => scan(&workspace, &roots, &filter)
                .expect("walk")
                .entries
                .len(),
            "digest" => {
                let entries = scan(&workspace, &roots, &filter).expect("walk").entries;
                let mut h = std::hash::DefaultHasher::new();
                for e in &entries {
                    let st = e.stat;
                    (e.path(), e.kind, e.target()).hash(&mut h);
                    (st.size, st.mtime_ns, st.ctime_ns, st.ino, st.mode).hash(&mut h);
                }
                println!("digest {:016x}", h.finish());
                entries.len()
            }
            _ => panic!("mode: stream, collect or digest"),
        };
        println!(
            "{mode}: {entries} entries in {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}
