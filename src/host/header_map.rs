//! Proxy-Wasm's header-map wire format (a count, (key length, value length) pairs, then
//! NUL-terminated keys and values), decoded without trusting it. [`super::Host::headers`] hands
//! the core a whole map in this format: one host call and one buffer for every header.

/// Header map wire format: count, (key len, value len) pairs, then NUL-terminated keys/values.
pub fn encode_map(map: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        4 + map
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>(),
    );
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Decodes a header map, borrowing from `bytes` (no allocation per header); a malformed map
/// yields the pairs read before the damage.
pub fn decode_map(bytes: &[u8]) -> Vec<(std::borrow::Cow<'_, str>, &[u8])> {
    let read_u32 = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let Some(count) = read_u32(0) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(count.min(256));
    let Some(mut p) = count.checked_mul(8).and_then(|n| n.checked_add(4)) else {
        return out;
    };
    for n in 0..count {
        let s = 4 + n * 8;
        let (Some(klen), Some(vlen)) = (read_u32(s), read_u32(s + 4)) else {
            break;
        };
        let Some(key) = p.checked_add(klen).and_then(|e| bytes.get(p..e)) else {
            break;
        };
        p += klen + 1;
        let Some(value) = p.checked_add(vlen).and_then(|e| bytes.get(p..e)) else {
            break;
        };
        p += vlen + 1;
        out.push((String::from_utf8_lossy(key), value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trip_and_damage() {
        let enc = encode_map(&[("a", "1"), (":path", "/v1/x")]);
        let dec = decode_map(&enc);
        assert_eq!(
            dec,
            vec![("a".into(), &b"1"[..]), (":path".into(), &b"/v1/x"[..])]
        );
        for cut in 0..enc.len() {
            let _ = decode_map(&enc[..cut]);
        }
        assert!(decode_map(&[0xff, 0xff, 0xff, 0xff]).is_empty());
        let mut bad = encode_map(&[("k", "v")]);
        let n = bad.len();
        bad[n - 2] = 0xff; // non-UTF-8 value byte
        assert_eq!(decode_map(&bad)[0].1, &[0xff][..]);
    }
}
