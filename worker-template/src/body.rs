//! Reading JSON request bodies with a cap that holds while streaming (issue
//! 10 item 7): a declared `content-length` over the cap is refused before
//! any byte is read, and a body without one (chunked) is read chunk by chunk
//! and refused as soon as it passes the cap, so a hostile body never makes
//! the isolate hold more than the cap plus one chunk.

use js_sys::{Reflect, Uint8Array};
use serde::de::DeserializeOwned;
use stateful_ci_protocol::wire::ErrorCode;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::Request;

use crate::refusal::{ApiResult, Refusal};

/// The largest JSON request body accepted. The largest legitimate one is a
/// commit or prepare listing `MAX_KEYS_PER_REQUEST` (1000) keys of 73
/// characters: about 80 KB.
pub const MAX_JSON_BODY: usize = 256 * 1024;

fn too_large() -> Refusal {
    Refusal::new(
        ErrorCode::TooLarge,
        format!(
            "the JSON body exceeds {} KiB; list at most 1000 objects per request",
            MAX_JSON_BODY / 1024
        ),
    )
}

/// Reads the whole body, refusing it once it exceeds `cap` bytes.
pub async fn read_capped(req: &Request, cap: usize) -> ApiResult<Vec<u8>> {
    let declared = req
        .headers()
        .get("content-length")?
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let Some(stream) = req.inner().body() else {
        return Ok(Vec::new());
    };
    let broken = |e: JsValue| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!("could not read the body: {e:?}; send it again"),
        )
    };
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut out = Vec::with_capacity(declared.unwrap_or(4096).min(cap as u64) as usize);
    loop {
        let res = JsFuture::from(reader.read()).await.map_err(broken)?;
        if Reflect::get(&res, &JsValue::from_str("done"))
            .map_err(broken)?
            .as_bool()
            .unwrap_or(true)
        {
            break;
        }
        let chunk: Uint8Array = Reflect::get(&res, &JsValue::from_str("value"))
            .map_err(broken)?
            .dyn_into()
            .map_err(broken)?;
        let len = chunk.length() as usize;
        if out.len() + len > cap {
            let _ = reader.cancel();
            return Err(too_large());
        }
        let at = out.len();
        out.resize(at + len, 0);
        chunk.copy_to(&mut out[at..]);
    }
    Ok(out)
}

/// Reads and parses a JSON body of at most [`MAX_JSON_BODY`] bytes.
pub async fn read_json<T: DeserializeOwned>(req: &Request) -> ApiResult<T> {
    let bytes = read_capped(req, MAX_JSON_BODY).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!("the JSON body is not valid for this route: {e}; see docs/PROTOCOL.md"),
        )
    })
}
