//! Google OAuth2 access tokens from a service-account key (the JWT-bearer flow, RFC 7523, as
//! google-auth does it; docs/providers.md §5.4), and the token cache's decisions. Plain Rust: the
//! Wasm glue (`wasm/token.rs`) only moves the bytes.
//!
//! 1. A JWT `{"alg":"RS256","typ":"JWT","kid":<private_key_id>}` . `{"iss":<client_email>,
//!    "scope":"https://www.googleapis.com/auth/cloud-platform","aud":<token_uri>,"iat":now,
//!    "exp":now+3600}`, signed RSASSA-PKCS1-v1_5 SHA-256 with the key's `private_key`.
//! 2. `POST <token_uri>`, form body `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<jwt>`.
//! 3. The answer's `access_token` is used until shortly before `expires_in`.
//!
//! The cache is one entry per provider in Envoy's shared data (all worker VMs see it), written
//! as [`Slot`]: the token, when to refresh it, when it expires, and a lease that says "a fetch
//! is under way until then", so that only one fetch runs at a time across all VMs.

use crate::codec::base64::url_no_pad as base64url;
use serde::Deserialize;

use crate::gcp::rs256::RsaKey;

pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Lifetime of the signed assertion (google-auth's default).
pub const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// A token is refreshed this long before it expires (or at half its lifetime, if shorter).
pub const REFRESH_MARGIN_MS: u64 = 300_000;
/// A token this close to expiry is not used at all (it could expire in flight).
pub const EXPIRY_SAFETY_MS: u64 = 10_000;

/// A service-account key, as Google issues it (the JSON file), parsed and checked.
#[derive(Clone)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key_id: Option<String>,
    key: RsaKey,
    pub token_uri: String,
    /// `:authority` and `:path` of `token_uri`, for the callout.
    pub token_authority: String,
    pub token_path: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ServiceAccount {
    fn eq(&self, other: &Self) -> bool {
        self.client_email == other.client_email
            && self.private_key_id == other.private_key_id
            && self.token_uri == other.token_uri
            && self.key.modulus() == other.key.modulus()
    }
}

/// `https://host[:port]/path` → (`host[:port]`, `/path`).
fn split_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    (ok(authority) && ok(path)).then(|| (authority.to_string(), path.to_string()))
}

impl ServiceAccount {
    /// Parses the key file. Errors say what is wrong without quoting the key.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct KeyFile {
            #[serde(rename = "type")]
            kind: Option<String>,
            client_email: Option<String>,
            private_key: Option<String>,
            private_key_id: Option<String>,
            token_uri: Option<String>,
        }
        let f: KeyFile = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a service-account key file (JSON): {e}"))?;
        if let Some(k) = f.kind.as_deref() {
            if k != "service_account" {
                return Err(format!("key file `type` is `{k}`, not `service_account`"));
            }
        }
        let client_email = f
            .client_email
            .filter(|e| e.contains('@'))
            .ok_or("the key file has no `client_email`")?;
        let pem = f.private_key.ok_or("the key file has no `private_key`")?;
        let key = RsaKey::from_pem(&pem).map_err(|e| {
            format!("`private_key` is not an RSA private key in PEM (PKCS#8 or PKCS#1): {e}")
        })?;
        if key.bits() < 2048 {
            return Err("`private_key` is shorter than 2048 bits".into());
        }
        let token_uri = f.token_uri.unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
        let (token_authority, token_path) = split_uri(&token_uri)
            .ok_or_else(|| format!("`token_uri` `{token_uri}` is not an http(s) URL"))?;
        Ok(ServiceAccount {
            client_email,
            private_key_id: f.private_key_id.filter(|k| !k.is_empty()),
            key,
            token_uri,
            token_authority,
            token_path,
        })
    }

    /// The signed JWT assertion for a token request at `now_unix`.
    pub fn assertion(&self, now_unix: u64) -> Result<String, String> {
        use crate::codec::json_text::json_string;
        let header = match &self.private_key_id {
            Some(kid) => format!(
                r#"{{"alg":"RS256","typ":"JWT","kid":{}}}"#,
                json_string(kid)
            ),
            None => r#"{"alg":"RS256","typ":"JWT"}"#.to_string(),
        };
        let claims = format!(
            r#"{{"iss":{},"scope":"{CLOUD_PLATFORM_SCOPE}","aud":{},"iat":{now_unix},"exp":{}}}"#,
            json_string(&self.client_email),
            json_string(&self.token_uri),
            now_unix.saturating_add(ASSERTION_LIFETIME_SECS)
        );
        let mut jwt = base64url(header.as_bytes());
        jwt.push('.');
        jwt.push_str(&base64url(claims.as_bytes()));
        let sig = self
            .key
            .sign_sha256(jwt.as_bytes())
            .map_err(|e| format!("signing the JWT failed: {e}"))?;
        jwt.push('.');
        jwt.push_str(&base64url(&sig));
        Ok(jwt)
    }

    /// The form body of the token request.
    pub fn token_request_body(&self, now_unix: u64) -> Result<Vec<u8>, String> {
        // The JWT is base64url and dots: nothing to escape.
        Ok(format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            self.assertion(now_unix)?
        )
        .into_bytes())
    }
}

/// A token endpoint's answer that gave no token: status and what it said.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenError {
    /// 0 when no answer came (timeout, connection failure).
    pub status: u16,
    pub message: String,
}

/// The token endpoint's answer → the cache entry to store.
pub fn parse_token_response(status: u16, body: &[u8], now_ms: u64) -> Result<Slot, TokenError> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: Option<String>,
        /// A number, or a number in a string.
        expires_in: Option<serde_json::Value>,
        error: Option<String>,
        error_description: Option<String>,
    }
    let answer = serde_json::from_slice::<Answer>(body).ok();
    let fail = |message: String| TokenError { status, message };
    if !(200..300).contains(&status) {
        let message = match &answer {
            Some(Answer {
                error: Some(e),
                error_description,
                ..
            }) => match error_description {
                Some(d) => format!("{e}: {d}"),
                None => e.clone(),
            },
            _ => String::from_utf8_lossy(body.get(..body.len().min(200)).unwrap_or(body))
                .into_owned(),
        };
        return Err(fail(message));
    }
    let a = answer.ok_or_else(|| fail("an answer that is not JSON".into()))?;
    let token = a
        .access_token
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| fail("an answer without a valid `access_token`".into()))?;
    let secs = match &a.expires_in {
        None => 3600,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .ok_or_else(|| fail(format!("`expires_in` {v} is not a number")))?,
    };
    let lifetime_ms = secs.saturating_mul(1000);
    let expires_at_ms = now_ms.saturating_add(lifetime_ms);
    Ok(Slot {
        token,
        refresh_at_ms: expires_at_ms.saturating_sub(REFRESH_MARGIN_MS.min(lifetime_ms / 2)),
        expires_at_ms,
        lease_until_ms: 0,
    })
}

/// One provider's cache entry in shared data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Slot {
    pub token: String,
    pub refresh_at_ms: u64,
    pub expires_at_ms: u64,
    /// A fetch is under way until then (0: none).
    pub lease_until_ms: u64,
}

impl Slot {
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "v1 {} {} {} {}",
            self.refresh_at_ms, self.expires_at_ms, self.lease_until_ms, self.token
        )
        .into_bytes()
    }

    /// Anything unreadable is an empty slot.
    pub fn decode(bytes: &[u8]) -> Slot {
        let text = std::str::from_utf8(bytes).unwrap_or("");
        let mut it = text.splitn(5, ' ');
        if it.next() != Some("v1") {
            return Slot::default();
        }
        let mut num = || it.next().and_then(|n| n.parse::<u64>().ok());
        match (num(), num(), num()) {
            (Some(refresh_at_ms), Some(expires_at_ms), Some(lease_until_ms)) => Slot {
                token: it.next().unwrap_or("").to_string(),
                refresh_at_ms,
                expires_at_ms,
                lease_until_ms,
            },
            _ => Slot::default(),
        }
    }

    /// This slot with a fetch lease until `until_ms` (the token, if any, kept).
    pub fn leased(&self, until_ms: u64) -> Slot {
        Slot {
            lease_until_ms: until_ms,
            ..self.clone()
        }
    }
}

/// What a request that needs a token does, given the cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The cached token is good.
    Use(String),
    /// The cached token is still good but due for refresh and nobody is fetching: use it, and
    /// take the lease to fetch a new one in the background.
    UseAndRefresh(String),
    /// No usable token and nobody is fetching: take the lease and fetch (the request waits).
    Fetch,
    /// No usable token; a fetch is under way (here or in another VM): wait for it.
    Wait,
}

pub fn decide(slot: &Slot, now_ms: u64) -> Decision {
    let usable =
        !slot.token.is_empty() && now_ms.saturating_add(EXPIRY_SAFETY_MS) < slot.expires_at_ms;
    let leased = now_ms < slot.lease_until_ms;
    match (usable, leased) {
        (true, _) if now_ms < slot.refresh_at_ms => Decision::Use(slot.token.clone()),
        (true, true) => Decision::Use(slot.token.clone()),
        (true, false) => Decision::UseAndRefresh(slot.token.clone()),
        (false, true) => Decision::Wait,
        (false, false) => Decision::Fetch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gcp::rs256::SHA256_DIGEST_INFO;
    use rsa::{Pkcs1v15Sign, RsaPublicKey};
    use sha2::{Digest, Sha256};

    const KEY_JSON: &str = include_str!("../../tests/fixtures/vertex/service_account.json");
    const PUBLIC_PEM: &str = include_str!("../../tests/fixtures/vertex/service_account_public.pem");

    fn b64url_decode(s: &str) -> Vec<u8> {
        let val = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'-' => 62,
                b'_' => 63,
                _ => panic!("not base64url: {c}"),
            }
        };
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for &c in s.as_bytes() {
            acc = (acc << 6) | val(c);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }

    #[test]
    fn jwt_is_signed_with_the_key_and_verifies_with_the_public_key() {
        use rsa::pkcs8::DecodePublicKey;
        let sa = ServiceAccount::from_json(KEY_JSON.as_bytes()).unwrap();
        assert_eq!(
            sa.client_email,
            "llmux-test@llmux-test-project.iam.gserviceaccount.com"
        );
        assert_eq!(sa.token_authority, "oauth2.googleapis.com");
        assert_eq!(sa.token_path, "/token");
        let jwt = sa.assertion(1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&b64url_decode(parts[0])).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "test-key-id-1"})
        );
        let claims: serde_json::Value = serde_json::from_slice(&b64url_decode(parts[1])).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"iss": "llmux-test@llmux-test-project.iam.gserviceaccount.com",
                "scope": CLOUD_PLATFORM_SCOPE, "aud": "https://oauth2.googleapis.com/token",
                "iat": 1_700_000_000u64, "exp": 1_700_003_600u64})
        );
        // The signature verifies with the public key (openssl-generated, not derived here).
        let public = RsaPublicKey::from_public_key_pem(PUBLIC_PEM).unwrap();
        let digest = Sha256::digest(format!("{}.{}", parts[0], parts[1]).as_bytes());
        let scheme = || Pkcs1v15Sign {
            hash_len: Some(32),
            prefix: Box::new(SHA256_DIGEST_INFO),
        };
        let sig = b64url_decode(parts[2]);
        assert_eq!(sig.len(), 256);
        public.verify(scheme(), &digest, &sig).unwrap();
        // ... and fails for other claims.
        let other = Sha256::digest(b"x.y");
        assert!(public.verify(scheme(), &other, &sig).is_err());
        // The form body carries it.
        let body = String::from_utf8(sa.token_request_body(1_700_000_000).unwrap()).unwrap();
        assert_eq!(
            body,
            format!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}"
            )
        );
    }

    #[test]
    fn bad_key_files_are_refused() {
        let good: serde_json::Value = serde_json::from_str(KEY_JSON).unwrap();
        let with = |k: &str, v: serde_json::Value| {
            let mut j = good.clone();
            j[k] = v;
            ServiceAccount::from_json(j.to_string().as_bytes()).unwrap_err()
        };
        assert!(with(
            "private_key",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into()
        )
        .contains("PEM"));
        assert!(with("client_email", "nobody".into()).contains("client_email"));
        assert!(with("type", "authorized_user".into()).contains("service_account"));
        assert!(with("token_uri", "ftp://x/token".into()).contains("token_uri"));
        assert!(ServiceAccount::from_json(b"{").is_err());
        // The key never shows in Debug.
        let sa = ServiceAccount::from_json(KEY_JSON.as_bytes()).unwrap();
        assert!(!format!("{sa:?}").contains("PRIVATE"));
        assert_eq!(sa, sa.clone());
    }

    #[test]
    fn token_answers() {
        let s = parse_token_response(
            200,
            br#"{"access_token":"ya29.a","expires_in":3599,"token_type":"Bearer"}"#,
            1_000,
        )
        .unwrap();
        assert_eq!(s.token, "ya29.a");
        assert_eq!(s.expires_at_ms, 3_600_000);
        assert_eq!(s.refresh_at_ms, 3_600_000 - REFRESH_MARGIN_MS);
        let s = parse_token_response(200, br#"{"access_token":"t","expires_in":"60"}"#, 0).unwrap();
        assert_eq!((s.expires_at_ms, s.refresh_at_ms), (60_000, 30_000));
        let e = parse_token_response(
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
            0,
        )
        .unwrap_err();
        assert_eq!(
            e,
            TokenError {
                status: 400,
                message: "invalid_grant: Invalid JWT Signature.".into()
            }
        );
        assert_eq!(
            parse_token_response(503, b"down", 0).unwrap_err().message,
            "down"
        );
        assert!(parse_token_response(200, b"{}", 0).is_err());
        assert!(parse_token_response(200, br#"{"access_token":"a b"}"#, 0).is_err());
        assert!(parse_token_response(200, br#"{"access_token":"a","expires_in":"x"}"#, 0).is_err());
    }

    #[test]
    fn slots_round_trip_and_garbage_is_empty() {
        let s = Slot {
            token: "ya29.x".into(),
            refresh_at_ms: 5,
            expires_at_ms: 9,
            lease_until_ms: 7,
        };
        assert_eq!(Slot::decode(&s.encode()), s);
        for junk in [&b""[..], b"v1", b"v1 a b c t", b"v2 1 2 3 t", b"\xff\xfe"] {
            assert_eq!(Slot::decode(junk), Slot::default());
        }
    }

    #[test]
    fn decisions() {
        let t = |refresh, expires, lease| Slot {
            token: "tok".into(),
            refresh_at_ms: refresh,
            expires_at_ms: expires,
            lease_until_ms: lease,
        };
        let now = 1_000_000;
        assert_eq!(decide(&Slot::default(), now), Decision::Fetch);
        assert_eq!(
            decide(&Slot::default().leased(now + 1), now),
            Decision::Wait
        );
        assert_eq!(
            decide(&Slot::default().leased(now), now),
            Decision::Fetch,
            "lease ran out"
        );
        assert_eq!(
            decide(&t(now + 1, now + 60_000, 0), now),
            Decision::Use("tok".into())
        );
        assert_eq!(
            decide(&t(now, now + 60_000, 0), now),
            Decision::UseAndRefresh("tok".into())
        );
        assert_eq!(
            decide(&t(now, now + 60_000, now + 5), now),
            Decision::Use("tok".into())
        );
        // Too close to expiry: not used.
        assert_eq!(
            decide(&t(0, now + EXPIRY_SAFETY_MS, 0), now),
            Decision::Fetch
        );
        assert_eq!(
            decide(&t(0, now + EXPIRY_SAFETY_MS, now + 1), now),
            Decision::Wait
        );
    }
}
