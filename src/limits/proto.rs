//! The few protobuf messages of `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`,
//! encoded and decoded by hand: five small messages do not need a code generator, and this keeps
//! the `.wasm` small. The decoder skips every field it does not know and never panics. The gRPC
//! round trip from Wasm to the rate-limit service is docs/design.md fact 7.

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor`, as LLMux sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    pub entries: Vec<(String, String)>,
    /// The `limit` override: requests_per_unit and unit.
    pub limit: Option<(u32, u32)>,
    /// Per-descriptor `hits_addend` (`google.protobuf.UInt64Value`).
    pub hits: Option<u32>,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn uint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(out, field, 0);
        varint(out, v);
    }
}

/// A serialized `RateLimitRequest`.
pub fn encode_request(domain: &str, descriptors: &[Descriptor], hits_addend: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + descriptors.len() * 64);
    bytes_field(&mut out, 1, domain.as_bytes());
    for d in descriptors {
        let mut dm = Vec::with_capacity(64);
        for (k, v) in &d.entries {
            let mut e = Vec::with_capacity(k.len() + v.len() + 4);
            bytes_field(&mut e, 1, k.as_bytes());
            bytes_field(&mut e, 2, v.as_bytes());
            bytes_field(&mut dm, 1, &e);
        }
        if let Some((rpu, unit)) = d.limit {
            let mut l = Vec::with_capacity(12);
            uint_field(&mut l, 1, u64::from(rpu));
            uint_field(&mut l, 2, u64::from(unit));
            bytes_field(&mut dm, 2, &l);
        }
        if let Some(h) = d.hits {
            let mut w = Vec::with_capacity(6);
            uint_field(&mut w, 1, u64::from(h));
            bytes_field(&mut dm, 3, &w);
        }
        bytes_field(&mut out, 2, &dm);
    }
    uint_field(&mut out, 3, u64::from(hits_addend));
    out
}

/// `RateLimitResponse.Code`.
pub const CODE_OK: u32 = 1;
pub const CODE_OVER_LIMIT: u32 = 2;

/// One `DescriptorStatus`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub code: u32,
    /// `current_limit`: requests_per_unit and unit.
    pub limit: Option<(u32, u32)>,
    pub remaining: u32,
    /// `duration_until_reset`, whole seconds (rounded up).
    pub reset_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    pub overall_code: u32,
    pub statuses: Vec<Status>,
}

/// A protobuf field: number and value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.b.split_first()?;
            self.b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok()?;
        if n > self.b.len() {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }

    /// The next field, or `None` at the end (or on malformed input).
    fn field(&mut self) -> Option<(u64, Field<'a>)> {
        if self.b.is_empty() {
            return None;
        }
        let key = self.varint()?;
        let f = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed
            }
            2 => {
                let n = self.varint()?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed
            }
            _ => return None,
        };
        Some((key >> 3, f))
    }
}

fn fields(b: &[u8]) -> impl Iterator<Item = (u64, Field<'_>)> {
    let mut r = Reader { b };
    std::iter::from_fn(move || r.field())
}

fn u32_of(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn decode_status(b: &[u8]) -> Status {
    let mut s = Status::default();
    for (n, f) in fields(b) {
        match (n, f) {
            (1, Field::Varint(v)) => s.code = u32_of(v),
            (2, Field::Bytes(l)) => {
                let (mut rpu, mut unit) = (0, 0);
                for (n, f) in fields(l) {
                    match (n, f) {
                        // `RateLimit`: requests_per_unit = 1, unit = 2 (name = 3).
                        (1, Field::Varint(v)) => rpu = u32_of(v),
                        (2, Field::Varint(v)) => unit = u32_of(v),
                        _ => {}
                    }
                }
                s.limit = Some((rpu, unit));
            }
            (3, Field::Varint(v)) => s.remaining = u32_of(v),
            (4, Field::Bytes(d)) => {
                let (mut secs, mut nanos) = (0u64, 0u64);
                for (n, f) in fields(d) {
                    match (n, f) {
                        // Negative durations (int64 as 10-byte varints) read as huge: clamp below.
                        (1, Field::Varint(v)) => secs = v,
                        (2, Field::Varint(v)) => nanos = v,
                        _ => {}
                    }
                }
                let secs = if secs > u64::from(u32::MAX) { 0 } else { secs };
                s.reset_secs = Some(secs + u64::from(nanos > 0 && nanos < 1_000_000_000));
            }
            _ => {}
        }
    }
    s
}

/// Decodes a `RateLimitResponse`; `None` when the bytes are not one.
pub fn decode_response(b: &[u8]) -> Option<Response> {
    let mut r = Response::default();
    let mut reader = Reader { b };
    while let Some((n, f)) = reader.field() {
        match (n, f) {
            (1, Field::Varint(v)) => r.overall_code = u32_of(v),
            (2, Field::Bytes(s)) => r.statuses.push(decode_status(s)),
            _ => {}
        }
    }
    if !reader.b.is_empty() || r.overall_code == 0 {
        return None;
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes_are_protobuf() {
        let d = Descriptor {
            entries: vec![("k".into(), "v".into())],
            limit: Some((3, 2)),
            hits: Some(300),
        };
        let b = encode_request("ab", &[d], 1);
        assert_eq!(
            b,
            [
                0x0a, 2, b'a', b'b', // domain
                0x12, 19, // descriptor
                0x0a, 6, 0x0a, 1, b'k', 0x12, 1, b'v', // entry
                0x12, 4, 0x08, 3, 0x10, 2, // limit
                0x1a, 3, 0x08, 0xac, 0x02, // hits_addend 300
                0x18, 1 // hits_addend
            ]
        );
    }

    #[test]
    fn response_decodes_and_skips_unknown_fields() {
        // overall OVER_LIMIT; status {code 2, current_limit {name "n", 5, MINUTE}, remaining 0,
        // reset {7 s, 1 ns}}; an unknown fixed32 field; an unknown bytes field.
        let b = [
            0x08, 2, 0x12, 27, 0x08, 2, 0x12, 7, 0x1a, 1, b'n', 0x08, 5, 0x10, 2, 0x18, 0, 0x22, 4,
            0x08, 7, 0x10, 1, 0x25, 1, 2, 3, 4, 0x2a, 1, b'x',
        ];
        let r = decode_response(&b).unwrap();
        assert_eq!(r.overall_code, CODE_OVER_LIMIT);
        assert_eq!(
            r.statuses,
            vec![Status {
                code: 2,
                limit: Some((5, 2)),
                remaining: 0,
                reset_secs: Some(8)
            }]
        );
    }

    #[test]
    fn garbage_never_panics() {
        assert_eq!(decode_response(&[]), None);
        assert_eq!(decode_response(&[0x12, 200, 1]), None);
        assert_eq!(decode_response(&[0xff; 12]), None);
        let mut x = 0x9e37_79b9u32;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..(x % 40))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = decode_response(&bytes);
        }
    }
}
