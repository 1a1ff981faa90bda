//! HMAC-SHA256, the one helper behind the two signatures vodhook makes:
//! TC3-HMAC-SHA256 for the VOD API ([`crate::vod::tc3`]) and the Standard
//! Webhooks signature of forwards ([`crate::actions::webhook_signature`]).
//! No IO.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `HMAC-SHA256(key, parts concatenated)`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4231_test_case_2() {
        // Key "Jefe", data "what do ya want for nothing?", given in parts.
        assert_eq!(
            hex::encode(hmac_sha256(
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
