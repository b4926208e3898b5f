//! End-to-end tests of the `stateful-ci` binary. One test binary (as in
//! ripgrep) with a module per area; each test builds its own workspaces and
//! stores in temporary directories and drives the real binary.

mod backend;
mod cli;
mod damage;
mod deploy;
mod init;
mod kill;
mod roundtrip;
mod status;
mod summary_schema;
mod tree;
mod util;
