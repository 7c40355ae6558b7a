//! Just enough `multipart/form-data` to find and replace one text field (the `model` of an
//! audio transcription or image edit) without touching the file parts around it.

/// The boundary from a `content-type: multipart/form-data; boundary=...` value.
pub fn boundary(content_type: &str) -> Option<&str> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"'))
            .filter(|b| !b.is_empty())
    })
}

/// The longest boundary accepted: RFC 2046 §5.1.1 ("boundary := 0*69<bchars> bcharsnospace",
/// i.e. 1 to 70 characters). A longer one is refused ([`field`] finds no field), so no search
/// ever runs with a needle longer than this.
pub const MAX_BOUNDARY: usize = 70;

#[cfg(test)]
thread_local! {
    /// Bytes [`find`] reads up to the end of its match, or to the end of the body when there is
    /// none (what a linear search examines; tests: the searches together stay linear).
    static SEARCHED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The first `finder` match at or after `from`: `memmem`'s search is linear in the haystack
/// (Two-Way), whatever the needle, and every caller resumes after the previous match, so the
/// searches of one form together read each body byte about once.
fn find(hay: &[u8], finder: &memchr::memmem::Finder<'_>, from: usize) -> Option<usize> {
    let rest = hay.get(from..)?;
    let found = finder.find(rest);
    #[cfg(test)]
    SEARCHED.with(|s| {
        let read = found.map_or(rest.len(), |i| i + finder.needle().len());
        s.set(s.get() + read);
    });
    found.map(|i| from + i)
}

/// Byte range of the value of the text field `name` (not a file part). `None` when there is
/// none, or the boundary is longer than [`MAX_BOUNDARY`].
pub fn field(body: &[u8], boundary: &str, name: &str) -> Option<(usize, usize)> {
    if boundary.is_empty() || boundary.len() > MAX_BOUNDARY {
        return None;
    }
    let delimiter = format!("--{boundary}");
    let closing = format!("\r\n--{boundary}");
    let delimiter_finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    let closing_finder = memchr::memmem::Finder::new(closing.as_bytes());
    let blank_line = memchr::memmem::Finder::new(b"\r\n\r\n");
    let wanted = format!("name=\"{name}\"");
    let mut at = find(body, &delimiter_finder, 0)?;
    loop {
        let headers_start = at + delimiter.len();
        if body.get(headers_start..headers_start + 2) == Some(b"--") {
            return None; // closing delimiter
        }
        let headers_end = find(body, &blank_line, headers_start)?;
        let value_start = headers_end + 4;
        let value_end = find(body, &closing_finder, value_start)?;
        let headers = String::from_utf8_lossy(&body[headers_start..headers_end]);
        let is_field = headers.lines().any(|line| {
            let lower = line.to_ascii_lowercase();
            lower.starts_with("content-disposition:")
                && lower.contains(&wanted)
                && !lower.contains("filename=")
        });
        if is_field {
            return Some((value_start, value_end));
        }
        at = value_end + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\x00\x01name=\"model\"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ--\r\n";

    #[test]
    fn finds_the_text_field_not_the_file() {
        assert_eq!(boundary("multipart/form-data; boundary=XyZ"), Some("XyZ"));
        assert_eq!(
            boundary("multipart/form-data; boundary=\"XyZ\""),
            Some("XyZ")
        );
        assert_eq!(boundary("application/json"), None);
        let (s, e) = field(BODY, "XyZ", "model").unwrap();
        assert_eq!(&BODY[s..e], b"whisper-1");
        assert_eq!(field(BODY, "XyZ", "language"), None);
    }

    #[test]
    fn truncated_bodies_do_not_panic() {
        for cut in 0..BODY.len() {
            let _ = field(&BODY[..cut], "XyZ", "model");
        }
        assert_eq!(field(b"", "XyZ", "model"), None);
    }

    /// The body the naive search was slowest on: every byte starts a candidate that matches
    /// for up to `run` bytes.
    fn near_misses(run: usize, len: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(len + run + 1);
        while body.len() < len {
            body.extend(std::iter::repeat_n(b'-', run));
            body.push(b'x');
        }
        body
    }

    #[test]
    fn boundaries_longer_than_rfc_2046_allows_are_refused() {
        let b70 = "b".repeat(70);
        let body = format!(
            "--{b70}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--{b70}--\r\n"
        );
        let (s, e) = field(body.as_bytes(), &b70, "model").unwrap();
        assert_eq!(&body.as_bytes()[s..e], b"m");
        let b71 = "b".repeat(71);
        let body = body.replace(&b70, &b71);
        assert_eq!(field(body.as_bytes(), &b71, "model"), None);
        assert_eq!(field(body.as_bytes(), "", "model"), None);
    }

    /// The searches of one form hand each body byte to `memmem` (linear) about once, with the
    /// worst body for the old search, and a form of many parts.
    #[test]
    fn the_search_is_linear_in_the_body() {
        let boundary = "-".repeat(MAX_BOUNDARY - 2);
        for len in [1 << 16, 1 << 18] {
            let body = near_misses(MAX_BOUNDARY + 1, len);
            SEARCHED.with(|s| s.set(0));
            assert_eq!(field(&body, &boundary, "model"), None);
            assert!(SEARCHED.with(|s| s.get()) <= body.len(), "{len}");
        }
        let mut body = Vec::new();
        for i in 0..5_000 {
            body.extend_from_slice(
                format!("--XyZ\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n")
                    .as_bytes(),
            );
        }
        body.extend_from_slice(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--XyZ--\r\n",
        );
        SEARCHED.with(|s| s.set(0));
        let (s, e) = field(&body, "XyZ", "model").unwrap();
        assert_eq!(&body[s..e], b"m");
        assert!(SEARCHED.with(|s| s.get()) <= 2 * body.len());
    }

    /// Worst case of the boundary search, timed (not a pass/fail test):
    /// `cargo test --release -p llmux --lib timing_ -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing_multipart_worst_case() {
        // Before the fix: an 8,000-byte boundary; now refused, so also time the longest allowed.
        for n in [8000, MAX_BOUNDARY] {
            let boundary = "-".repeat(n);
            let body = near_misses(n + 1, 1 << 20);
            let t = std::time::Instant::now();
            let r = field(&body, &boundary, "model");
            eprintln!(
                "multipart: 1 MiB body, {n}-byte boundary: {:?} ({r:?})",
                t.elapsed()
            );
        }
    }
}
