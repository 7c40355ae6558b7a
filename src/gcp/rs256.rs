//! RS256 (RSASSA-PKCS1-v1_5 with SHA-256, RFC 8017 §8.2) signing with an RSA private key read
//! from PEM (PKCS#8 `BEGIN PRIVATE KEY`, as in Google's service-account files, or PKCS#1
//! `BEGIN RSA PRIVATE KEY`).
//!
//! Why not the RustCrypto `rsa` crate: it builds for wasm32-wasip1, but with its PEM/DER parsing
//! it added ~140 KB to the filter (~100 KB at `opt-level = "z"`), which took the `.wasm` over its
//! 1 MiB limit. This is the little the filter needs: a DER walk to the modulus and private
//! exponent, and one modular exponentiation (Montgomery, 32-bit limbs). PKCS#1 v1.5 signatures
//! are deterministic, so the unit tests check every signature byte for byte against the `rsa`
//! crate (a dev-dependency) and verify it with the openssl-generated public key.
//!
//! Only our own JWTs are ever signed (no attacker-chosen input), about once an hour per provider;
//! the exponentiation multiplies on every exponent bit to keep timing independent of the key bits
//! as far as the control flow goes.

use sha2::{Digest, Sha256};

/// DER `DigestInfo` header for SHA-256 (RFC 8017 §9.2, note 1).
pub const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// OID 1.2.840.113549.1.1.1 (rsaEncryption), DER contents.
const RSA_ENCRYPTION: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// An RSA private key: modulus and private exponent, as little-endian 32-bit limbs.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaKey {
    n: Vec<u32>,
    d: Vec<u32>,
    /// Modulus length in bytes.
    k: usize,
}

impl RsaKey {
    /// Modulus size in bits (rounded to bytes).
    pub fn bits(&self) -> usize {
        self.k * 8
    }

    /// The modulus, big-endian (to compare keys without exposing the secret).
    pub fn modulus(&self) -> Vec<u8> {
        to_bytes(&self.n, self.k)
    }

    pub fn from_pem(pem: &str) -> Result<RsaKey, &'static str> {
        let (label, der) = pem_decode(pem).ok_or("not PEM")?;
        let rsa_private_key = match label {
            "PRIVATE KEY" => {
                // PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier, OCTET STRING }
                let mut info = Der(der.as_slice()).seq()?;
                info.int()?;
                let mut alg = info.seq()?;
                if alg.take(0x06)? != RSA_ENCRYPTION {
                    return Err("not an RSA key");
                }
                info.take(0x04)?
            }
            "RSA PRIVATE KEY" => der.as_slice(),
            _ => return Err("not a private key"),
        };
        // RSAPrivateKey ::= SEQUENCE { version, n, e, d, p, q, dp, dq, qinv }
        let mut k = Der(rsa_private_key).seq()?;
        k.int()?;
        let n = k.int()?;
        k.int()?;
        let d = k.int()?;
        if n.len() < 64 || n.last().is_some_and(|b| b % 2 == 0) || d.is_empty() {
            return Err("not a valid RSA key");
        }
        let len = n.len();
        Ok(RsaKey {
            n: limbs(n, len),
            d: limbs(d, len),
            k: len,
        })
    }

    /// The RS256 signature of `message` (`k` bytes).
    pub fn sign_sha256(&self, message: &[u8]) -> Result<Vec<u8>, &'static str> {
        let hash = Sha256::digest(message);
        let t_len = SHA256_DIGEST_INFO.len() + hash.len();
        if self.k < t_len + 11 {
            return Err("key too short for SHA-256");
        }
        // EM = 0x00 || 0x01 || PS (0xff...) || 0x00 || DigestInfo || H
        let mut em = vec![0xffu8; self.k];
        em[0] = 0;
        em[1] = 1;
        let at = self.k - t_len;
        em[at - 1] = 0;
        em[at..at + SHA256_DIGEST_INFO.len()].copy_from_slice(&SHA256_DIGEST_INFO);
        em[at + SHA256_DIGEST_INFO.len()..].copy_from_slice(&hash);
        let m = limbs(&em, self.k);
        let s = mod_pow(&m, &self.d, &self.n);
        Ok(to_bytes(&s, self.k))
    }
}

/// Big-endian bytes (leading zeros allowed, at most `len` significant) → limbs for `len` bytes.
fn limbs(be: &[u8], len: usize) -> Vec<u32> {
    let mut out = vec![0u32; len.div_ceil(4)];
    for (i, &b) in be.iter().rev().enumerate() {
        if let Some(l) = out.get_mut(i / 4) {
            *l |= u32::from(b) << (8 * (i % 4));
        }
    }
    out
}

fn to_bytes(x: &[u32], len: usize) -> Vec<u8> {
    (0..len)
        .rev()
        .map(|i| x.get(i / 4).map_or(0, |l| (l >> (8 * (i % 4))) as u8))
        .collect()
}

/// `-n⁻¹ mod 2³²` (n odd), by Newton's iteration.
fn neg_inv(n0: u32) -> u32 {
    let mut inv: u32 = 1;
    for _ in 0..5 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(inv)));
    }
    inv.wrapping_neg()
}

/// `a >= b`, same length.
fn geq(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x > y;
        }
    }
    true
}

/// `a -= b` (a ≥ b), same length.
fn sub_in_place(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0u64;
    for (x, &y) in a.iter_mut().zip(b) {
        let v = u64::from(*x)
            .wrapping_sub(u64::from(y))
            .wrapping_sub(borrow);
        *x = v as u32;
        borrow = (v >> 63) & 1;
    }
}

/// Montgomery product `a·b·R⁻¹ mod n` (CIOS), all of `n.len()` limbs, inputs < n.
fn mont_mul(a: &[u32], b: &[u32], n: &[u32], n_inv: u32) -> Vec<u32> {
    let s = n.len();
    let mut t = vec![0u32; s + 2];
    for &bi in b.iter().take(s) {
        let mut c = 0u64;
        for j in 0..s {
            let v = u64::from(t[j]) + u64::from(a[j]) * u64::from(bi) + c;
            t[j] = v as u32;
            c = v >> 32;
        }
        let v = u64::from(t[s]) + c;
        t[s] = v as u32;
        t[s + 1] = (v >> 32) as u32;
        let m = t[0].wrapping_mul(n_inv);
        let mut c = (u64::from(t[0]) + u64::from(m) * u64::from(n[0])) >> 32;
        for j in 1..s {
            let v = u64::from(t[j]) + u64::from(m) * u64::from(n[j]) + c;
            t[j - 1] = v as u32;
            c = v >> 32;
        }
        let v = u64::from(t[s]) + c;
        t[s - 1] = v as u32;
        t[s] = t[s + 1] + (v >> 32) as u32;
    }
    let mut r: Vec<u32> = t[..s].to_vec();
    if t[s] != 0 || geq(&r, n) {
        sub_in_place(&mut r, n);
    }
    r
}

/// `base^exp mod n` (n odd; base < n).
fn mod_pow(base: &[u32], exp: &[u32], n: &[u32]) -> Vec<u32> {
    let s = n.len();
    let n_inv = neg_inv(n[0]);
    // R² mod n, R = 2^(32·s): double 1 up 2·32·s times, reducing as we go.
    let mut rr = vec![0u32; s];
    rr[0] = 1;
    for _ in 0..(64 * s) {
        let mut carry = 0u32;
        for l in rr.iter_mut() {
            let next = *l >> 31;
            *l = (*l << 1) | carry;
            carry = next;
        }
        if carry != 0 || geq(&rr, n) {
            sub_in_place(&mut rr, n);
        }
    }
    let mut one = vec![0u32; s];
    one[0] = 1;
    let base_m = mont_mul(base, &rr, n, n_inv);
    let mut acc = mont_mul(&one, &rr, n, n_inv);
    for limb in exp.iter().rev() {
        for bit in (0..32).rev() {
            acc = mont_mul(&acc, &acc, n, n_inv);
            let product = mont_mul(&acc, &base_m, n, n_inv);
            if (limb >> bit) & 1 == 1 {
                acc = product;
            }
        }
    }
    mont_mul(&acc, &one, n, n_inv)
}

/// A DER reader over one level of contents.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The contents of the next element, which must have tag `tag`.
    fn take(&mut self, tag: u8) -> Result<&'a [u8], &'static str> {
        const BAD: &str = "bad DER";
        let (&t, rest) = self.0.split_first().ok_or(BAD)?;
        if t != tag {
            return Err(BAD);
        }
        let (&first, rest) = rest.split_first().ok_or(BAD)?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 3 || rest.len() < n {
                return Err(BAD);
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return Err(BAD);
        }
        let (contents, after) = rest.split_at(len);
        self.0 = after;
        Ok(contents)
    }

    fn seq(&mut self) -> Result<Der<'a>, &'static str> {
        self.take(0x30).map(Der)
    }

    /// A non-negative INTEGER's magnitude, big-endian, leading zeros dropped.
    fn int(&mut self) -> Result<&'a [u8], &'static str> {
        let v = self.take(0x02)?;
        if v.first().is_some_and(|b| b & 0x80 != 0) {
            return Err("negative INTEGER");
        }
        let zeros = v.iter().take_while(|b| **b == 0).count();
        Ok(&v[zeros..])
    }
}

/// `-----BEGIN <label>-----` base64 `-----END <label>-----` → (label, bytes).
fn pem_decode(pem: &str) -> Option<(&str, Vec<u8>)> {
    let start = pem.find("-----BEGIN ")? + 11;
    let label_end = start + pem[start..].find("-----")?;
    let label = &pem[start..label_end];
    let body_start = label_end + 5;
    let end = body_start + pem[body_start..].find("-----END ")?;
    let mut out = Vec::with_capacity((end - body_start) * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in pem[body_start..end].bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some((label, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_JSON: &str = include_str!("../../tests/fixtures/vertex/service_account.json");
    const PUBLIC_PEM: &str = include_str!("../../tests/fixtures/vertex/service_account_public.pem");

    fn pem() -> String {
        let v: serde_json::Value = serde_json::from_str(KEY_JSON).unwrap();
        v["private_key"].as_str().unwrap().to_string()
    }

    fn scheme() -> rsa::Pkcs1v15Sign {
        rsa::Pkcs1v15Sign {
            hash_len: Some(32),
            prefix: Box::new(SHA256_DIGEST_INFO),
        }
    }

    #[test]
    fn signatures_match_rustcrypto_rsa_byte_for_byte_and_verify() {
        use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
        let ours = RsaKey::from_pem(&pem()).unwrap();
        assert_eq!(ours.bits(), 2048);
        let theirs = rsa::RsaPrivateKey::from_pkcs8_pem(&pem()).unwrap();
        let public = rsa::RsaPublicKey::from_public_key_pem(PUBLIC_PEM).unwrap();
        for msg in [
            &b""[..],
            b"a",
            b"eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0",
            &[0xffu8; 1000],
        ] {
            let sig = ours.sign_sha256(msg).unwrap();
            let digest = Sha256::digest(msg);
            assert_eq!(sig, theirs.sign(scheme(), &digest).unwrap());
            public.verify(scheme(), &digest, &sig).unwrap();
        }
        let sig = ours.sign_sha256(b"x").unwrap();
        assert!(public
            .verify(scheme(), &Sha256::digest(b"y"), &sig)
            .is_err());
    }

    #[test]
    fn pkcs1_pem_and_other_key_sizes() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::EncodePrivateKey;
        // Keys of other sizes (and an odd byte length), made by the rsa crate.
        let mut rng = crate::test_support::XorShift(42);
        struct Rng<'a>(&'a mut crate::test_support::XorShift);
        impl rand_core::RngCore for Rng<'_> {
            fn next_u32(&mut self) -> u32 {
                self.0.next() as u32
            }
            fn next_u64(&mut self) -> u64 {
                self.0.next()
            }
            fn fill_bytes(&mut self, d: &mut [u8]) {
                for b in d {
                    *b = self.0.next() as u8;
                }
            }
            fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), rand_core::Error> {
                self.fill_bytes(d);
                Ok(())
            }
        }
        impl rand_core::CryptoRng for Rng<'_> {}
        for bits in [1024usize, 1032] {
            let key = rsa::RsaPrivateKey::new(&mut Rng(&mut rng), bits).unwrap();
            let pkcs1 = key.to_pkcs1_pem(Default::default()).unwrap();
            let pkcs8 = key.to_pkcs8_pem(Default::default()).unwrap();
            for p in [pkcs1.as_str(), pkcs8.as_str()] {
                let ours = RsaKey::from_pem(p).unwrap();
                let sig = ours.sign_sha256(b"hello").unwrap();
                let digest = Sha256::digest(b"hello");
                assert_eq!(sig, key.sign(scheme(), &digest).unwrap(), "{bits} bits");
            }
        }
    }

    #[test]
    fn bad_pem_and_der_are_errors_never_panics() {
        assert!(RsaKey::from_pem("").is_err());
        assert!(
            RsaKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
                .is_err()
        );
        assert!(RsaKey::from_pem(PUBLIC_PEM).is_err());
        let good = pem();
        let mut rng = crate::test_support::XorShift(9);
        let body_start = good.find('\n').unwrap() + 1;
        for _ in 0..300 {
            let mut b = good.clone().into_bytes();
            let at = body_start + (rng.next() as usize % (b.len() - body_start - 30));
            b[at] = b"ABCxyz019+/"[rng.next() as usize % 11];
            // Parsing only: a mutated key that still parses signs like any key.
            let _ = RsaKey::from_pem(&String::from_utf8(b).unwrap());
        }
    }
}
