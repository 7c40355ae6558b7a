//! AWS Signature Version 4 for header-signed requests (docs/providers.md §6.5; AWS's "Create a
//! signed AWS API request").
//!
//! - Canonical URI: the path exactly as it goes on the wire, URI-encoded once more (every byte but
//!   the unreserved `A-Za-z0-9-._~` and `/`), which is AWS's rule for every service but S3: each
//!   path segment is encoded twice. A model id `a:b` is sent as `a%3Ab` and signed as `a%253Ab`.
//! - Canonical query: `name=value` pairs, each side encoded, sorted by name then value.
//! - Canonical headers: lower-case names, sorted, values trimmed with inner runs of spaces
//!   collapsed; the signed-header list is the same names joined by `;`.
//! - Payload hash: lower-case hex SHA-256 of the exact body sent.
//! - Key: HMAC chain `AWS4<secret>` → date → region → service → `aws4_request`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Long-term or temporary AWS credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Temporary credentials (STS) come with a token, sent and signed as `x-amz-security-token`.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret or the token (config dumps, logs).
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// One request to sign. `path` and `query` are exactly as sent on the wire.
pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// Without the `?`; empty when there is none.
    pub query: &'a str,
    /// Headers to sign besides `host`, `x-amz-date` and `x-amz-security-token`.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The headers that make a request signed: `x-amz-date`, `x-amz-security-token` (with a session
/// token) and `authorization`, in that order.
pub fn sign(
    req: &Request<'_>,
    creds: &Credentials,
    region: &str,
    service: &str,
    now_unix: u64,
) -> Vec<(String, String)> {
    let amz_date = amz_date(now_unix);
    let mut headers: Vec<(String, String)> = Vec::with_capacity(req.headers.len() + 3);
    headers.push(("host".into(), req.host.to_string()));
    headers.push(("x-amz-date".into(), amz_date.clone()));
    if let Some(token) = &creds.session_token {
        headers.push(("x-amz-security-token".into(), token.clone()));
    }
    for (k, v) in req.headers {
        headers.push((k.to_ascii_lowercase(), v.to_string()));
    }
    let payload_hash = hex(&Sha256::digest(req.body));
    let (canonical, signed_headers) =
        canonical_request(req.method, req.path, req.query, &headers, &payload_hash);
    let authorization = authorization(
        creds,
        &amz_date,
        region,
        service,
        &canonical,
        &signed_headers,
    );
    let mut out = vec![("x-amz-date".to_string(), amz_date)];
    if let Some(token) = &creds.session_token {
        out.push(("x-amz-security-token".to_string(), token.clone()));
    }
    out.push(("authorization".to_string(), authorization));
    out
}

/// The canonical request and the signed-header list. `headers` are (name, value) pairs; names
/// are lower-cased here, repeated names are joined with `,` in the order given.
pub fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    payload_hash: &str,
) -> (String, String) {
    let mut hs: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (k, v) in headers {
        let k = k.to_ascii_lowercase();
        let v = collapse(v);
        match hs.iter_mut().find(|(n, _)| *n == k) {
            Some((_, existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            None => hs.push((k, v)),
        }
    }
    hs.sort_by(|a, b| a.0.cmp(&b.0));
    let signed_headers = hs
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut s = String::with_capacity(256);
    s.push_str(method);
    s.push('\n');
    s.push_str(&uri_encode(if path.is_empty() { "/" } else { path }, false));
    s.push('\n');
    s.push_str(&canonical_query(query));
    s.push('\n');
    for (k, v) in &hs {
        s.push_str(k);
        s.push(':');
        s.push_str(v);
        s.push('\n');
    }
    s.push('\n');
    s.push_str(&signed_headers);
    s.push('\n');
    s.push_str(payload_hash);
    (s, signed_headers)
}

/// `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
pub fn authorization(
    creds: &Credentials,
    amz_date: &str,
    region: &str,
    service: &str,
    canonical_request: &str,
    signed_headers: &str,
) -> String {
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(
        format!("AWS4{}", creds.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex(&hmac(&k_signing, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id
    )
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail here.
    let mut out = [0u8; 32];
    if let Ok(mut m) = HmacSha256::new_from_slice(key) {
        m.update(data);
        out.copy_from_slice(&m.finalize().into_bytes());
    }
    out
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

/// Percent-encodes every byte but `A-Za-z0-9-._~` (and `/` unless `encode_slash`), upper-case hex.
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (b == b'/' && !encode_slash)
        {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
    out
}

/// `a=1&b=2` from a wire query: each name and value decoded then encoded the AWS way, sorted.
fn canonical_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), true),
                uri_encode(&percent_decode(v), true),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hexval = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Trimmed, with every run of spaces/tabs inside collapsed to one space.
fn collapse(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, w) in v.split_ascii_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// `YYYYMMDD'T'HHMMSS'Z'` for Unix seconds (UTC).
pub fn amz_date(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The AWS Signature Version 4 test suite ("signature-v4-test-suite", the vectors AWS ships with
    // its SDKs): credentials AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, region
    // us-east-1, service `service`, 2015-08-30T12:36:00Z, host example.amazonaws.com. The expected
    // signatures are AWS's, not computed here.
    const T: u64 = 1_440_938_160;
    const TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

    fn creds(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_string),
        }
    }

    fn auth(
        method: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        token: Option<&str>,
    ) -> String {
        let req = Request {
            method,
            host: "example.amazonaws.com",
            path: "/",
            query,
            headers,
            body,
        };
        let out = sign(&req, &creds(token), "us-east-1", "service", T);
        assert_eq!(
            out[0],
            ("x-amz-date".to_string(), "20150830T123600Z".to_string())
        );
        out.last().unwrap().1.clone()
    }

    const SCOPE: &str =
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, ";

    #[test]
    fn aws_test_suite_vectors() {
        // get-vanilla
        assert_eq!(auth("GET", "", &[], b"", None), format!("{SCOPE}SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"));
        // get-vanilla-query-order-key-case
        assert!(
            auth("GET", "Param2=value2&Param1=value1", &[], b"", None).ends_with(
                "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            )
        );
        // post-vanilla
        assert_eq!(auth("POST", "", &[], b"", None), format!("{SCOPE}SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"));
        // post-vanilla-query
        assert!(auth("POST", "Param1=value1", &[], b"", None).ends_with(
            "Signature=28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"
        ));
        // post-x-www-form-urlencoded
        assert_eq!(
            auth("POST", "", &[("Content-Type", "application/x-www-form-urlencoded")], b"Param1=value1", None),
            format!("{SCOPE}SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a")
        );
        // post-sts-header-before: the session token is signed
        assert_eq!(
            auth("POST", "", &[], b"", Some(TOKEN)),
            format!("{SCOPE}SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead")
        );
    }

    #[test]
    fn path_segments_are_encoded_twice() {
        let (c, signed) = canonical_request(
            "POST",
            "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse",
            "",
            &[("Host".into(), " h  x ".into())],
            "e3",
        );
        assert_eq!(
            c,
            "POST\n/model/us.anthropic.claude-3-5-haiku-20241022-v1%253A0/converse\n\nhost:h x\n\nhost\ne3"
        );
        assert_eq!(signed, "host");
        assert_eq!(uri_encode("a b/ü~", true), "a%20b%2F%C3%BC~");
    }

    #[test]
    fn dates() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(T), "20150830T123600Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(amz_date(4_102_444_799), "20991231T235959Z");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let s = format!("{:?}", creds(Some("tok")));
        assert!(!s.contains("wJalr") && !s.contains("tok\""), "{s}");
    }
}
