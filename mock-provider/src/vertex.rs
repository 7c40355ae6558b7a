//! Vertex AI (PROVIDERS.md §5) and Google's OAuth2 token endpoint.
//!
//! - `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent`,
//!   `:streamGenerateContent?alt=sse` (the Gemini mock), `:predict` (text embeddings);
//!   `.../publishers/anthropic/models/{m}:rawPredict`, `:streamRawPredict` (the Anthropic mock,
//!   after checking the body has no `model` and `"anthropic_version": "vertex-2023-10-16"`);
//!   `.../publishers/anthropic/models/count-tokens:rawPredict` (Anthropic's token count, the
//!   body with its `model` and the Vertex `anthropic_version`).
//!   Every Vertex route needs `Authorization: Bearer <token>`: `--vertex-token`, or a token this
//!   mock issued. Errors are Google's `{"error":{"code","message","status"}}`.
//! - `POST /token`: the JWT-bearer grant. The assertion's RS256 signature is verified against
//!   `--vertex-public-key` (PEM), its claims checked (iss, scope, aud, iat/exp); then a fresh
//!   token is issued and counted. `GET /__mock/tokens` answers `{"issued": N}`.

use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Tokens: the static one, the public key that signs assertions, and what was issued.
#[derive(Default)]
pub struct Tokens {
    pub static_token: Option<String>,
    pub public_key: Option<RsaPublicKey>,
    issued: Mutex<HashSet<String>>,
    count: AtomicU64,
}

impl Tokens {
    pub fn new(static_token: Option<String>, public_key_pem: Option<&str>) -> Result<Self, String> {
        let public_key = match public_key_pem {
            Some(p) => Some(
                RsaPublicKey::from_public_key_pem(p)
                    .map_err(|e| format!("--vertex-public-key: not an RSA public key PEM: {e}"))?,
            ),
            None => None,
        };
        Ok(Tokens {
            static_token,
            public_key,
            ..Tokens::default()
        })
    }

    pub fn issued(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// `Authorization` header value → accepted?
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some(tok) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
            return false;
        };
        if self.static_token.as_deref() == Some(tok) {
            return true;
        }
        self.issued.lock().map(|s| s.contains(tok)).unwrap_or(false)
    }

    /// `POST /token` → (status, JSON body).
    pub fn grant(&self, form: &[u8]) -> (u16, Vec<u8>) {
        let fail = |status: u16, error: &str, desc: &str| {
            (
                status,
                json!({"error": error, "error_description": desc})
                    .to_string()
                    .into_bytes(),
            )
        };
        let form = String::from_utf8_lossy(form);
        let mut grant_type = None;
        let mut assertion = None;
        for pair in form.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "grant_type" => grant_type = Some(percent_decode(v)),
                "assertion" => assertion = Some(percent_decode(v)),
                _ => {}
            }
        }
        if grant_type.as_deref() != Some(GRANT) {
            return fail(400, "unsupported_grant_type", "Invalid grant_type");
        }
        let Some(assertion) = assertion else {
            return fail(
                400,
                "invalid_request",
                "Missing required parameter: assertion",
            );
        };
        if let Err(m) = self.verify(&assertion) {
            return fail(400, "invalid_grant", &m);
        }
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let token = format!("ya29.mock-{n}");
        if let Ok(mut s) = self.issued.lock() {
            s.insert(token.clone());
        }
        (
            200,
            json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})
                .to_string()
                .into_bytes(),
        )
    }

    fn verify(&self, jwt: &str) -> Result<(), String> {
        let key = self
            .public_key
            .as_ref()
            .ok_or("mock: no --vertex-public-key to verify assertions with")?;
        let parts: Vec<&str> = jwt.split('.').collect();
        let [h, c, s] = parts[..] else {
            return Err("Invalid JWT: not three segments".into());
        };
        let header: Value =
            serde_json::from_slice(&b64url(h)?).map_err(|_| "Invalid JWT header")?;
        if header["alg"] != "RS256" || header["typ"] != "JWT" {
            return Err(format!("Invalid JWT header: {header}"));
        }
        let claims: Value =
            serde_json::from_slice(&b64url(c)?).map_err(|_| "Invalid JWT claims")?;
        let scheme = Pkcs1v15Sign {
            hash_len: Some(32),
            prefix: Box::new(SHA256_DIGEST_INFO),
        };
        let digest = Sha256::digest(format!("{h}.{c}").as_bytes());
        key.verify(scheme, &digest, &b64url(s)?)
            .map_err(|_| "Invalid JWT Signature.".to_string())?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let iat = claims["iat"].as_u64().ok_or("Invalid JWT: no iat")?;
        let exp = claims["exp"].as_u64().ok_or("Invalid JWT: no exp")?;
        if !claims["iss"].as_str().is_some_and(|i| i.contains('@')) {
            return Err("Invalid JWT: iss".into());
        }
        if claims["aud"] != TOKEN_URI {
            return Err(format!("Invalid JWT: aud {}", claims["aud"]));
        }
        if !claims["scope"]
            .as_str()
            .is_some_and(|s| s.split(' ').any(|x| x == SCOPE))
        {
            return Err("Invalid JWT: scope".into());
        }
        if iat.abs_diff(now) > 300 || exp <= iat || exp - iat > 3600 {
            return Err("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.".into());
        }
        Ok(())
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn b64url(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return Err("Invalid JWT: not base64url".into()),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// A Vertex model path, split: (publisher, model, method).
pub fn parse_path(path: &str) -> Option<(&str, &str, &str)> {
    let rest = path.strip_prefix("/v1/projects/")?;
    let mut it = rest.splitn(7, '/');
    let (_project, l, _location, p, publisher, m, tail) = (
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
    );
    if l != "locations" || p != "publishers" || m != "models" {
        return None;
    }
    let (model, method) = tail.split_once(':')?;
    (!model.is_empty() && !model.contains('/')).then_some((publisher, model, method))
}

/// Claude on Vertex: the body must have no `model` and the Vertex `anthropic_version`; the
/// Messages body the Anthropic mock validates is this one with `model` from the URL.
pub fn anthropic_body(body: &Value, model: &str) -> Result<Value, String> {
    let o = body.as_object().ok_or("body must be a JSON object")?;
    if o.contains_key("model") {
        return Err(
            "model: Extra inputs are not permitted (on Vertex AI the model is in the URL)".into(),
        );
    }
    match o.get("anthropic_version").and_then(Value::as_str) {
        Some(ANTHROPIC_VERSION) => {}
        other => {
            return Err(format!(
                "anthropic_version: expected \"{ANTHROPIC_VERSION}\", got {other:?}"
            ))
        }
    }
    let mut o = o.clone();
    o.remove("anthropic_version");
    o.insert("model".into(), Value::String(model.to_string()));
    Ok(Value::Object(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("/v1/projects/p/locations/us-central1/publishers/anthropic/models/claude-x@1:rawPredict"),
            Some(("anthropic", "claude-x@1", "rawPredict"))
        );
        assert_eq!(
            parse_path("/v1/projects/p/locations/l/publishers/google/models/:predict"),
            None
        );
        assert_eq!(
            parse_path("/v1/projects/p/x/l/publishers/google/models/m:predict"),
            None
        );
    }

    #[test]
    fn anthropic_body_rules() {
        let ok = json!({"anthropic_version": ANTHROPIC_VERSION, "max_tokens": 5, "messages": []});
        assert_eq!(anthropic_body(&ok, "c").unwrap()["model"], "c");
        assert!(anthropic_body(
            &json!({"model": "c", "anthropic_version": ANTHROPIC_VERSION}),
            "c"
        )
        .is_err());
        assert!(anthropic_body(&json!({"max_tokens": 5}), "c").is_err());
        assert!(anthropic_body(&json!({"anthropic_version": "2023-06-01"}), "c").is_err());
    }

    #[test]
    fn grants_need_a_valid_assertion() {
        let t = Tokens::new(Some("static".into()), None).unwrap();
        assert!(t.accepts(Some("Bearer static")));
        assert!(!t.accepts(Some("Bearer other")));
        assert!(!t.accepts(None));
        // No public key: nothing verifies.
        let (s, _) = t.grant(
            b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b.c",
        );
        assert_eq!(s, 400);
        let (s, b) = t.grant(b"grant_type=password");
        assert_eq!(s, 400);
        assert!(String::from_utf8_lossy(&b).contains("unsupported_grant_type"));
        assert_eq!(t.issued(), 0);
        assert_eq!(percent_decode("a%3Ab%zz+c%"), "a:b%zz c%");
    }

    fn b64url_encode(b: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for k in 0..=c.len() {
                out.push(A[(n >> (18 - 6 * k)) as usize & 63] as char);
            }
        }
        out
    }

    #[test]
    fn a_signed_assertion_gets_a_token_and_a_tampered_one_does_not() {
        use rsa::pkcs8::DecodePrivateKey;
        let sa: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/vertex/service_account.json"
        ))
        .unwrap();
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(sa["private_key"].as_str().unwrap()).unwrap();
        let t = Tokens::new(
            None,
            Some(include_str!(
                "../../tests/fixtures/vertex/service_account_public.pem"
            )),
        )
        .unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let jwt = |claims: Value| {
            let h = b64url_encode(br#"{"alg":"RS256","typ":"JWT"}"#);
            let c = b64url_encode(claims.to_string().as_bytes());
            let scheme = Pkcs1v15Sign {
                hash_len: Some(32),
                prefix: Box::new(SHA256_DIGEST_INFO),
            };
            let sig = key
                .sign(scheme, &Sha256::digest(format!("{h}.{c}").as_bytes()))
                .unwrap();
            format!("{h}.{c}.{}", b64url_encode(&sig))
        };
        let form = |a: &str| {
            format!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={a}"
            )
        };
        let good =
            json!({"iss": "a@b", "scope": SCOPE, "aud": TOKEN_URI, "iat": now, "exp": now + 3600});
        let (s, b) = t.grant(form(&jwt(good.clone())).as_bytes());
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        let tok: Value = serde_json::from_slice(&b).unwrap();
        assert!(t.accepts(Some(&format!(
            "Bearer {}",
            tok["access_token"].as_str().unwrap()
        ))));
        assert_eq!(t.issued(), 1);
        // Tampered claims keep the old signature: refused.
        let signed = jwt(good.clone());
        let mut parts: Vec<String> = signed.split('.').map(str::to_string).collect();
        parts[1] = b64url_encode(json!({"iss": "evil@b", "scope": SCOPE, "aud": TOKEN_URI, "iat": now, "exp": now + 3600}).to_string().as_bytes());
        let (s, b) = t.grant(form(&parts.join(".")).as_bytes());
        assert_eq!(s, 400);
        assert!(String::from_utf8_lossy(&b).contains("Invalid JWT Signature"));
        // Wrong audience, or too long-lived: refused.
        let mut bad = good.clone();
        bad["aud"] = json!("https://example.com/token");
        assert_eq!(t.grant(form(&jwt(bad)).as_bytes()).0, 400);
        let mut bad = good;
        bad["exp"] = json!(now + 7200);
        assert_eq!(t.grant(form(&jwt(bad)).as_bytes()).0, 400);
        assert_eq!(t.issued(), 1);
    }
}
