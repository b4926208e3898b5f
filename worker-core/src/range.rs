//! HTTP `Range` requests on objects: one `bytes=` range (multi-range is
//! refused; clients ask for one span at a time).

/// A requested span, before the object's size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b` (inclusive) or `bytes=a-` (`end` None).
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

/// Parses a `Range` header. `Err` carries a message for a 416/400 answer.
pub fn parse(header: &str) -> Result<ByteRange, String> {
    let spec = header
        .trim()
        .strip_prefix("bytes=")
        .ok_or_else(|| format!("Range {header:?} is not a bytes range; send e.g. bytes=0-1023"))?;
    if spec.contains(',') {
        return Err("multiple ranges are not supported; request one span at a time".into());
    }
    let (a, b) = spec
        .split_once('-')
        .ok_or_else(|| format!("Range {header:?} has no '-'"))?;
    let num = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("Range {header:?} has a bad number"))
    };
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, true) => Err(format!("Range {header:?} is empty")),
        (true, false) => {
            let n = num(b)?;
            if n == 0 {
                return Err("a zero-length suffix range cannot be satisfied".into());
            }
            Ok(ByteRange::Suffix(n))
        }
        (false, _) => {
            let start = num(a)?;
            let end = if b.trim().is_empty() {
                None
            } else {
                Some(num(b)?)
            };
            if end.is_some_and(|e| e < start) {
                return Err(format!("Range {header:?} ends before it starts"));
            }
            Ok(ByteRange::From { start, end })
        }
    }
}

impl ByteRange {
    /// `(offset, length)` within an object of `size` bytes, or None when the
    /// range cannot be satisfied (416).
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::Suffix(n) => {
                if size == 0 {
                    return None;
                }
                let n = n.min(size);
                Some((size - n, n))
            }
            ByteRange::From { start, end } => {
                if start >= size {
                    return None;
                }
                let last = end.unwrap_or(u64::MAX).min(size - 1);
                Some((start, last - start + 1))
            }
        }
    }
}

/// The `Content-Range` value for a served span.
pub fn content_range(offset: u64, length: u64, size: u64) -> String {
    format!("bytes {}-{}/{}", offset, offset + length - 1, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves() {
        assert_eq!(parse("bytes=0-9").unwrap().resolve(100), Some((0, 10)));
        assert_eq!(parse("bytes=90-").unwrap().resolve(100), Some((90, 10)));
        assert_eq!(parse("bytes=90-500").unwrap().resolve(100), Some((90, 10)));
        assert_eq!(parse("bytes=-5").unwrap().resolve(100), Some((95, 5)));
        assert_eq!(parse("bytes=-500").unwrap().resolve(100), Some((0, 100)));
        assert_eq!(parse("bytes=100-").unwrap().resolve(100), None);
        assert_eq!(content_range(90, 10, 100), "bytes 90-99/100");
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        for bad in [
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=5-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=-0",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
