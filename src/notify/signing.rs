//! Standard Webhooks signatures (standardwebhooks.com): the sender signs
//! `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256 under the
//! decoded `whsec_` key and sends `v1,<base64>`; a receiver accepts any one
//! matching entry of the space-separated list.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a signed timestamp may be from our clock.
pub const TOLERANCE_SECS: i64 = 5 * 60;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing `{0}` header")]
    MissingHeader(&'static str),
    #[error("`webhook-timestamp` is not a Unix time in seconds")]
    BadTimestamp,
    #[error("`webhook-timestamp` is more than 5 minutes away from now")]
    StaleTimestamp,
    #[error("no `webhook-signature` entry matches")]
    NoMatch,
}

/// The `webhook-signature` value for one message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac(key, id, timestamp, body))
    )
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    // INVARIANT: HMAC accepts keys of any length, so new_from_slice cannot fail.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// Checks a received message; `now` is Unix seconds.
pub fn verify(
    key: &[u8],
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let id = id.ok_or(SignatureError::MissingHeader("webhook-id"))?;
    let ts = timestamp.ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
    let signature = signature.ok_or(SignatureError::MissingHeader("webhook-signature"))?;
    let ts: i64 = ts
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(SignatureError::StaleTimestamp);
    }
    let expected = mac(key, id, ts, body);
    let matched = signature
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .any(|got| constant_time_eq(&got, &expected));
    if matched {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes a `whsec_` secret into key bytes.
pub fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_")?)
        .ok()
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The published test vector (field notes, checked against the spec).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let key = decode_secret(SECRET).unwrap();
        assert_eq!(sign(&key, ID, TS, BODY), SIG);
    }

    #[test]
    fn verifies_rotation_lists_and_refuses_tampering_and_stale_times() {
        let key = decode_secret(SECRET).unwrap();
        let ts = TS.to_string();
        let list = format!("v1,bm90IGl0 {SIG}");
        assert_eq!(
            verify(&key, Some(ID), Some(&ts), Some(&list), BODY, TS + 10),
            Ok(())
        );
        assert_eq!(
            verify(&key, Some(ID), Some(&ts), Some(SIG), b"{\"test\": 1}", TS),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(&key, Some(ID), Some(&ts), Some(SIG), BODY, TS + 301),
            Err(SignatureError::StaleTimestamp)
        );
        assert_eq!(
            verify(&key, None, Some(&ts), Some(SIG), BODY, TS),
            Err(SignatureError::MissingHeader("webhook-id"))
        );
    }
}
