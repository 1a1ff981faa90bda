//! The VOD callback signature (`docs/vod-protocol.md` §2.1): with a
//! `SignKey` configured, VOD adds `Sign` and `T` to each callback, where
//! `Sign = hex(MD5(SignKey + T))` and `T` is the signature's expiry in UNIX
//! seconds. Pure functions, no IO; the key and signatures never leave here
//! except as a yes/no.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// Why a callback's signature was refused; each maps to its own 401 reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// No `Sign` or no `T`, neither in the body nor in the headers.
    #[error("missing signature: Sign and T are required")]
    Missing,
    /// `Sign` is not 32 hex digits, or `T` is not a UNIX time.
    #[error("malformed signature: Sign must be 32 hex digits and T a UNIX time")]
    Malformed,
    /// `Sign` does not match `MD5(SignKey + T)`.
    #[error("wrong signature")]
    Wrong,
    /// `T` is in the past by more than the allowed clock skew.
    #[error("expired signature: T is in the past")]
    Expired,
}

impl SignError {
    /// A short label for metrics and logs: `missing`, `malformed`, `wrong`, `expired`.
    pub fn reason(self) -> &'static str {
        match self {
            SignError::Missing => "missing",
            SignError::Malformed => "malformed",
            SignError::Wrong => "wrong",
            SignError::Expired => "expired",
        }
    }
}

/// The callback key, kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct SignKey(std::sync::Arc<str>);

impl SignKey {
    /// Wraps a key (VOD allows up to 32 ASCII letters and digits).
    ///
    /// # Errors
    ///
    /// Empty, longer than 32, or not `[A-Za-z0-9]`.
    pub fn new(key: &str) -> Result<SignKey, String> {
        if key.is_empty() || key.len() > 32 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(
                "auth.sign_key must be 1 to 32 letters and digits (as VOD requires)".to_owned(),
            );
        }
        Ok(SignKey(key.into()))
    }
}

impl std::fmt::Debug for SignKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignKey(<redacted>)")
    }
}

/// The configured check: key and allowed clock skew.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// The `SignKey`.
    pub key: SignKey,
    /// Seconds `T` may lie in the past.
    pub clock_skew_secs: u64,
}

impl Verifier {
    /// Checks a received `Sign`/`T` pair now.
    ///
    /// # Errors
    ///
    /// [`SignError`].
    pub fn check(&self, sign_hex: Option<&str>, t: Option<&str>) -> Result<(), SignError> {
        let now = crate::clock::now_secs();
        verify(&self.key, sign_hex, t, now, self.clock_skew_secs)
    }
}

/// The signature `VOD` computes: lowercase hex of `MD5(key + t)`.
pub fn sign(key: &SignKey, t: &str) -> String {
    hex::encode(digest(key, t))
}

/// `MD5(key + t)`, the one computation behind [`sign`] and [`verify`].
fn digest(key: &SignKey, t: &str) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(key.0.as_bytes());
    md5.update(t.as_bytes());
    md5.finalize().into()
}

/// Checks `sign` and `t` as received against `key` at time `now` (UNIX
/// seconds), allowing `T` to lie up to `skew_secs` in the past.
///
/// ```
/// use vodhook::sign::{sign, verify, SignKey, SignError};
/// let key = SignKey::new("MySignKey123").unwrap();
/// let t = "1700000600";
/// assert_eq!(sign(&key, t), "40bbe921f545a341da3676c2e47a8b04");
/// assert_eq!(verify(&key, Some("40BBE921F545A341DA3676C2E47A8B04"), Some(t), 1_700_000_000, 60), Ok(()));
/// assert_eq!(verify(&key, Some("40bbe921f545a341da3676c2e47a8b05"), Some(t), 1_700_000_000, 60), Err(SignError::Wrong));
/// ```
///
/// # Errors
///
/// [`SignError`]: which of the four checks failed.
pub fn verify(
    key: &SignKey,
    sign_hex: Option<&str>,
    t: Option<&str>,
    now: i64,
    skew_secs: u64,
) -> Result<(), SignError> {
    let (Some(sign_hex), Some(t)) = (sign_hex, t) else {
        return Err(SignError::Missing);
    };
    let t = t.trim();
    let received = decode_hex(sign_hex.trim()).ok_or(SignError::Malformed)?;
    let expiry: i64 = t.parse().map_err(|_| SignError::Malformed)?;
    if !constant_time_eq(&digest(key, t), &received) {
        return Err(SignError::Wrong);
    }
    if expiry.saturating_add(skew_secs as i64) < now {
        return Err(SignError::Expired);
    }
    Ok(())
}

fn decode_hex(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Equality that takes the same time wherever the inputs differ (`subtle`;
/// only the lengths are compared in variable time).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SignKey {
        SignKey::new("MySignKey123").unwrap()
    }

    #[test]
    fn the_protocol_notes_vector() {
        // docs/vod-protocol.md §2.1: md5("MySignKey1231700000600").
        assert_eq!(
            sign(&key(), "1700000600"),
            "40bbe921f545a341da3676c2e47a8b04"
        );
    }

    #[test]
    fn the_mps_order_is_not_accepted() {
        // MPS signs T + key; VOD signs key + T. The MPS value must fail.
        let mps = "12b523f2f744951a6486520cd572439e";
        assert_eq!(
            verify(&key(), Some(mps), Some("1700000600"), 1_700_000_000, 60),
            Err(SignError::Wrong)
        );
    }

    #[test]
    fn each_failure_has_its_reason() {
        let good = "40bbe921f545a341da3676c2e47a8b04";
        let t = Some("1700000600");
        assert_eq!(verify(&key(), None, t, 0, 60), Err(SignError::Missing));
        assert_eq!(
            verify(&key(), Some(good), None, 0, 60),
            Err(SignError::Missing)
        );
        assert_eq!(
            verify(&key(), Some("xyz"), t, 0, 60),
            Err(SignError::Malformed)
        );
        assert_eq!(
            verify(&key(), Some(&good[..31]), t, 0, 60),
            Err(SignError::Malformed)
        );
        assert_eq!(
            verify(&key(), Some(good), Some("soon"), 0, 60),
            Err(SignError::Malformed)
        );
        let other = SignKey::new("OtherKey").unwrap();
        assert_eq!(verify(&other, Some(good), t, 0, 60), Err(SignError::Wrong));
        assert_eq!(
            verify(&key(), Some(good), t, 1_700_000_661, 60),
            Err(SignError::Expired)
        );
        assert_eq!(verify(&key(), Some(good), t, 1_700_000_660, 60), Ok(()));
    }

    #[test]
    fn keys_are_validated_and_never_printed() {
        assert!(SignKey::new("").is_err());
        assert!(SignKey::new("has space").is_err());
        assert!(SignKey::new(&"a".repeat(33)).is_err());
        assert_eq!(format!("{:?}", key()), "SignKey(<redacted>)");
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
