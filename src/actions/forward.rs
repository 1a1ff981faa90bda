//! The `forward` runner: a POST signed as a Standard Webhook, following
//! no redirect.

use std::time::Duration;

use base64::Engine as _;

use super::{failed, OUTPUT_LIMIT};
use crate::mac::hmac_sha256;
use crate::redact::redact;
use crate::store::{AttemptRow, DueDelivery};

/// The HMAC key of a Standard Webhooks secret: the base64 after `whsec_`
/// (or the bytes of any other string).
pub fn webhook_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, the Standard
/// Webhooks signature.
pub fn webhook_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let mac = hmac_sha256(
        key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac)
    )
}

pub(crate) async fn run_forward(
    url: &str,
    key: Option<&[u8]>,
    delivery: &DueDelivery,
    timeout: Duration,
) -> AttemptRow {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .user_agent(concat!("vodhook/", env!("CARGO_PKG_VERSION")))
            // The configured target answers, or the attempt fails: a
            // redirect must not carry the event (and its signature)
            // elsewhere, nor count as its delivery.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|error| {
                tracing::error!(%error, "cannot build the forward client; forwards fail");
                reqwest::Client::new()
            })
    });
    // Stable across retries, so that receivers can deduplicate.
    let id = format!("msg_vodhook_{}", delivery.id);
    let timestamp = crate::clock::now_secs();
    let mut request = client
        .post(url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("x-vodhook-event-type", &delivery.event.meta.event_type)
        .body(delivery.raw.clone());
    if let Some(key) = key {
        request = request.header(
            "webhook-signature",
            webhook_signature(key, &id, timestamp, &delivery.raw),
        );
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let error = if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
                Some(match location {
                    Some(location) => format!(
                        "answered {status}, a redirect to {} (not followed)",
                        redact(&location)
                    ),
                    None => format!("answered {status}, a redirect (not followed)"),
                })
            } else {
                (!status.is_success()).then(|| format!("answered {status}"))
            };
            let mut body = response.text().await.unwrap_or_default();
            if body.len() > OUTPUT_LIMIT {
                let mut end = OUTPUT_LIMIT;
                while !body.is_char_boundary(end) {
                    end -= 1;
                }
                body.truncate(end);
                body.push_str("\n[output truncated]");
            }
            AttemptRow {
                ok: status.is_success(),
                http_status: Some(status.as_u16()),
                error,
                stdout: Some(body),
                ..AttemptRow::default()
            }
        }
        Err(error) if error.is_timeout() => {
            failed(format!("no answer within {} s", timeout.as_secs()))
        }
        Err(error) if error.is_connect() => failed(format!(
            "cannot connect to {}: {}",
            redact(url),
            error_chain(error)
        )),
        Err(error) => failed(format!("request failed: {}", error_chain(error))),
    }
}

/// A request error and its causes, without the URL (which may hold
/// credentials; the caller names it, redacted).
fn error_chain(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    redact(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_signature_of_the_spec_example() {
        // The example of the Standard Webhooks specification.
        let key = webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            webhook_signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
