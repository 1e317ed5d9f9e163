//! The webhook sink: `POST PAYOUT_WEBHOOK_URL` with the payout as JSON, headers
//! `Idempotency-Key: <payout_id>` and `X-Lucid-Signature: sha256=<hex HMAC-SHA256 of the
//! body with PAYOUT_WEBHOOK_SECRET>`. A 2xx answer with `{"tx_hash": "<64 hex>"}` means
//! paid; anything else is retried with the same idempotency key (and the same body).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::target::{read_capped, resolve, Refusal, MAX_ANSWER_BYTES};
use super::Delivery;
use crate::domain::money::format_usdt;
use crate::domain::netguard::AllowedNetworks;
use crate::domain::payout::{normalize_tx_hash, Payout};
use crate::domain::timefmt::rfc3339_us;

pub struct WebhookSink {
    url: String,
    secret: String,
    timeout: Duration,
    allowed: AllowedNetworks,
}

/// `sha256=<hex HMAC-SHA256(body, secret)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The request body: the same bytes for every attempt of a payout.
pub fn body(payout: &Payout) -> Vec<u8> {
    json!({
        "payout_id": payout.payout_id,
        "node_id": payout.node_id,
        "amount_usdt": format_usdt(payout.amount),
        "payout_address": payout.payout_address,
        "created_at": rfc3339_us(payout.created_at_us),
    })
    .to_string()
    .into_bytes()
}

/// Checks `PAYOUT_WEBHOOK_URL` at start: an address the guard refuses stops the start. A
/// host that does not resolve now is only logged (DNS may come up after us); every
/// delivery resolves and checks again.
pub async fn check_at_start(url: &str, allowed: &AllowedNetworks) -> Result<(), String> {
    match resolve(url, allowed).await {
        Ok(_) => Ok(()),
        Err(Refusal::Unresolvable(why)) => {
            tracing::warn!(%why, "PAYOUT_WEBHOOK_URL does not resolve now; each delivery tries again");
            Ok(())
        }
        Err(refusal) => Err(format!("PAYOUT_WEBHOOK_URL: {refusal}")),
    }
}

impl WebhookSink {
    pub fn new(url: &str, secret: &str, timeout: Duration, allowed: AllowedNetworks) -> Self {
        Self {
            url: url.to_string(),
            secret: secret.to_string(),
            timeout,
            allowed,
        }
    }

    pub async fn deliver(&self, payout: &Payout) -> Delivery {
        // Resolved and checked again for each payout (DNS can change), and the request
        // goes to the address checked. Refused: never sent, so certainly not paid.
        let target = match resolve(&self.url, &self.allowed).await {
            Ok(t) => t,
            Err(refusal) => return not_paid(&refusal.to_string()),
        };
        let client = match target.client(self.timeout) {
            Ok(c) => c,
            Err(e) => return not_paid(&e),
        };
        let body = body(payout);
        let sent = client
            .post(target.url.clone())
            .header("content-type", "application/json")
            .header("Idempotency-Key", &payout.payout_id)
            .header("X-Lucid-Signature", signature(&self.secret, &body))
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            // Never connected: the request cannot have been paid.
            Err(e) if e.is_connect() => {
                return not_paid(&format!(
                    "cannot connect to the payment service: {}",
                    e.without_url()
                ))
            }
            Err(e) if e.is_timeout() => {
                return unknown("the payment service did not answer in time")
            }
            Err(e) => {
                return unknown(&format!(
                    "the request to the payment service failed: {}",
                    e.without_url()
                ))
            }
        };
        let status = response.status().as_u16();
        match read_capped(response, MAX_ANSWER_BYTES).await {
            Ok(bytes) => classify(status, &String::from_utf8_lossy(&bytes)),
            Err(e) => unknown(&format!("reading the answer failed: {}", e.without_url())),
        }
    }
}

/// What an answer means for the money: only a receipt is "paid", only a clear refusal
/// (4xx other than 408/429) is "not paid"; everything else may have been paid.
pub fn classify(status: u16, body: &str) -> Delivery {
    match status {
        200..=299 => {
            let tx_hash = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| {
                    v.get("tx_hash")
                        .and_then(|h| h.as_str())
                        .and_then(normalize_tx_hash)
                });
            match tx_hash {
                Some(tx_hash) => Delivery::Paid { tx_hash },
                None => unknown("the payment service answered 2xx without a valid tx_hash"),
            }
        }
        408 | 429 => unknown(&format!("the payment service answered {status}")),
        400..=499 => not_paid(&format!(
            "the payment service refused the payout ({status}): {}",
            body.chars().take(200).collect::<String>()
        )),
        _ => unknown(&format!("the payment service answered {status}")),
    }
}

fn not_paid(reason: &str) -> Delivery {
    Delivery::NotPaid {
        reason: reason.to_string(),
    }
}

fn unknown(reason: &str) -> Delivery {
    Delivery::Unknown {
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clear_refusals_count_as_not_paid() {
        let hash = "c".repeat(64);
        assert_eq!(
            classify(200, &format!("{{\"tx_hash\":\"{hash}\"}}")),
            Delivery::Paid { tx_hash: hash }
        );
        assert!(matches!(classify(200, "<html>"), Delivery::Unknown { .. }));
        assert!(matches!(classify(500, ""), Delivery::Unknown { .. }));
        assert!(matches!(classify(429, ""), Delivery::Unknown { .. }));
        assert!(matches!(
            classify(422, "no such address"),
            Delivery::NotPaid { .. }
        ));
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let sig = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
