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

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        match hay[i..].iter().position(|&b| b == first) {
            None => return None,
            Some(off) => {
                i += off;
                if hay.get(i..i + needle.len()) == Some(needle) {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// Byte range of the value of the text field `name` (not a file part).
pub fn field(body: &[u8], boundary: &str, name: &str) -> Option<(usize, usize)> {
    let delimiter = format!("--{boundary}");
    let closing = format!("\r\n--{boundary}");
    let mut at = find(body, delimiter.as_bytes(), 0)?;
    loop {
        let headers_start = at + delimiter.len();
        if body.get(headers_start..headers_start + 2) == Some(b"--") {
            return None; // closing delimiter
        }
        let headers_end = find(body, b"\r\n\r\n", headers_start)?;
        let value_start = headers_end + 4;
        let value_end = find(body, closing.as_bytes(), value_start)?;
        let headers = String::from_utf8_lossy(&body[headers_start..headers_end]);
        let is_field = headers.lines().any(|line| {
            let lower = line.to_ascii_lowercase();
            lower.starts_with("content-disposition:")
                && lower.contains(&format!("name=\"{name}\""))
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
}
