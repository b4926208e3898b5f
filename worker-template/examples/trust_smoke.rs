//! A tiny C-ABI front over the trust crate's `verify` → `classify` →
//! `decide`, built as a `wasm32-unknown-unknown` module by
//! `scripts/check-trust-wasm.sh` and driven from Node
//! (`trust/tests/wasm/smoke.mjs`), which signs tokens with its own RSA
//! implementation. It shows that the crate verifies real signatures on the
//! Worker's target, compiled as the Worker compiles it: it lives in the
//! Worker's workspace so that it is built with the Worker's release profile,
//! std build and dependencies (worker-template/target), which also makes it
//! nearly free after the Worker's own build.
//!
//! Protocol: the host copies the token and the JWKS JSON into buffers from
//! `smoke_alloc`, calls `smoke_verify`, and reads `smoke_result_len` bytes
//! at `smoke_result_ptr`: `ok <class> <save scope or "none">` or the error code.

use std::sync::Mutex;

use stateful_ci_trust::{Jwks, TrustConfig, VerifyConfig, Workspace, classify, decide, verify};

static RESULT: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Allocates `len` bytes for the host to fill; never freed (one-shot tests).
#[unsafe(no_mangle)]
pub extern "C" fn smoke_alloc(len: usize) -> *mut u8 {
    let mut buf = Vec::<u8>::with_capacity(len.max(1));
    let ptr = buf.as_mut_ptr();
    std::mem::forget(buf);
    ptr
}

/// Verifies, classifies and decides; returns the result's length.
///
/// # Safety
/// `token`/`jwks` must point at `token_len`/`jwks_len` initialised bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smoke_verify(
    token: *const u8,
    token_len: usize,
    jwks: *const u8,
    jwks_len: usize,
    now_unix: i64,
) -> usize {
    // SAFETY: the caller passes buffers it filled via `smoke_alloc`.
    let (token, jwks) = unsafe {
        (
            std::slice::from_raw_parts(token, token_len),
            std::slice::from_raw_parts(jwks, jwks_len),
        )
    };
    let out = run(token, jwks, now_unix);
    let mut result = RESULT.lock().unwrap_or_else(|e| e.into_inner());
    *result = out.into_bytes();
    result.len()
}

#[unsafe(no_mangle)]
pub extern "C" fn smoke_result_ptr() -> *const u8 {
    RESULT.lock().unwrap_or_else(|e| e.into_inner()).as_ptr()
}

fn run(token: &[u8], jwks: &[u8], now_unix: i64) -> String {
    let (Ok(token), Ok(jwks)) = (std::str::from_utf8(token), std::str::from_utf8(jwks)) else {
        return "not_utf8".into();
    };
    let jwks = match Jwks::from_json(jwks) {
        Ok(j) => j,
        Err(e) => return e.code().into(),
    };
    let cfg = VerifyConfig::github("stateful-ci", ["octo-org/octo-repo"]).expect("valid config");
    let trust = TrustConfig::new("main").expect("valid branch");
    match verify(token, &jwks, &cfg, now_unix) {
        Err(e) => e.code().into(),
        Ok(claims) => {
            let run = classify(&claims, &trust);
            let d = decide(&run, &Workspace::new("default").expect("valid workspace"));
            let save = d
                .save_scope()
                .map(ToString::to_string)
                .unwrap_or_else(|| "none".into());
            format!("ok {} {save}", d.class)
        }
    }
}
