//! Base64 encoding (RFC 4648): standard with padding (OpenAI's `encoding_format: base64`
//! embeddings) and URL-safe without padding (JWTs). Small enough not to need a crate.

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard alphabet, padded.
pub fn standard(bytes: &[u8]) -> String {
    encode(bytes, STANDARD, true)
}

/// URL-safe alphabet, no padding.
pub fn url_no_pad(bytes: &[u8]) -> String {
    encode(bytes, URL_SAFE, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(standard(plain.as_bytes()), enc);
            assert_eq!(url_no_pad(plain.as_bytes()), enc.trim_end_matches('='));
        }
        assert_eq!(standard(&[0xfb, 0xff]), "+/8=");
        assert_eq!(url_no_pad(&[0xfb, 0xff]), "-_8");
    }
}
