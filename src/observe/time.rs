//! Request timings and RFC 3339 timestamps from unix nanoseconds (without a date crate): the
//! times in metrics, usage records and exported payloads.
//!
//! A leaf module (it names no other module of the crate), so that `routing` can read a
//! request's [`Timings`] (latency records) while `observe` names routing's error classes,
//! without a module cycle.

/// One finished request, as measured by the glue: what the metrics and the record are made of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    /// Request headers arrived (unix ns).
    pub start_ns: u64,
    /// The request was sent upstream (0: never).
    pub forwarded_ns: u64,
    /// First response body byte from the provider (0: none).
    pub first_byte_ns: u64,
    /// Last response byte (or the end of the request, when there was no response).
    pub end_ns: u64,
}

impl Timings {
    pub fn duration_ms(&self) -> Option<u64> {
        (self.forwarded_ns > 0 && self.end_ns >= self.forwarded_ns)
            .then(|| (self.end_ns - self.forwarded_ns) / 1_000_000)
    }

    pub fn ttft_ms(&self) -> Option<u64> {
        (self.forwarded_ns > 0 && self.first_byte_ns >= self.forwarded_ns)
            .then(|| (self.first_byte_ns - self.forwarded_ns) / 1_000_000)
    }

    /// Microseconds per output token after the first: (last byte − first byte) / (tokens − 1).
    pub fn tpot_us(&self, output_tokens: u64) -> Option<u64> {
        (self.first_byte_ns > 0 && self.end_ns >= self.first_byte_ns && output_tokens >= 2)
            .then(|| (self.end_ns - self.first_byte_ns) / 1_000 / (output_tokens - 1))
    }
}

/// `2024-01-02T03:04:05.678Z` (milliseconds, UTC).
pub fn rfc3339_millis(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let millis = (unix_ns / 1_000_000) % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(951_782_400_123_456_789),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            rfc3339_millis(1_700_000_000_999_000_000),
            "2023-11-14T22:13:20.999Z"
        );
        assert_eq!(
            rfc3339_millis(4_102_444_799_000_000_000),
            "2099-12-31T23:59:59.000Z"
        );
        // u64::MAX does not panic.
        assert!(rfc3339_millis(u64::MAX).starts_with("2554-"));
    }
}
