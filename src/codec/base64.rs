//! Base64 (RFC 4648): encoding, standard with padding (OpenAI's `encoding_format: base64`
//! embeddings) and URL-safe without padding (JWTs); decoding of the standard alphabet (the
//! `bytes` of Bedrock's InvokeModelWithResponseStream chunks). Small enough not to need a crate.

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

/// Decodes standard-alphabet base64, padded or not; `None` for any other byte (whitespace
/// included) or a length no encoder produces.
pub fn decode_standard(text: &[u8]) -> Option<Vec<u8>> {
    let body = match text {
        [rest @ .., b'=', b'='] | [rest @ .., b'='] => rest,
        all => all,
    };
    if body.len() % 4 == 1 || (text.len() != body.len() && text.len() % 4 != 0) {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in body {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = ((acc << 6) | u32::from(v)) & 0xFF_FFFF;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
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

    #[test]
    fn decodes_what_it_encodes_and_refuses_the_rest() {
        for n in 0..40u8 {
            let plain: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            let enc = standard(&plain);
            assert_eq!(
                decode_standard(enc.as_bytes()),
                Some(plain.clone()),
                "{enc}"
            );
            let unpadded = enc.trim_end_matches('=');
            assert_eq!(decode_standard(unpadded.as_bytes()), Some(plain));
        }
        assert_eq!(decode_standard(b"+/8="), Some(vec![0xfb, 0xff]));
        for bad in [
            &b"Zm9v\n"[..],
            b"Zm9-",
            b"Z",
            b"Zm9vY",
            b"Zg=",
            b"Zm9=v",
            b"====",
        ] {
            assert_eq!(
                decode_standard(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
