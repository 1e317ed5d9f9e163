//! The webhook sink: `POST PAYOUT_WEBHOOK_URL` with the payout as JSON, headers
//! `Idempotency-Key: <payout_id>` and `X-Lucid-Signature: sha256=<hex HMAC-SHA256 of the
//! body with PAYOUT_WEBHOOK_SECRET>`. A 2xx answer with `{"tx_hash": "<64 hex>"}` means
//! paid; anything else is retried with the same idempotency key (and the same body).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::Delivery;
use crate::domain::money::format_usdt;
use crate::domain::payout::{normalize_tx_hash, Payout};
use crate::domain::timefmt::rfc3339_us;

pub struct WebhookSink {
    client: reqwest::Client,
    url: String,
    secret: String,
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

impl WebhookSink {
    pub fn new(url: &str, secret: &str, timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        Ok(Self {
            client,
            url: url.to_string(),
            secret: secret.to_string(),
        })
    }

    pub async fn deliver(&self, payout: &Payout) -> Delivery {
        let body = body(payout);
        let sent = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("Idempotency-Key", &payout.payout_id)
            .header("X-Lucid-Signature", signature(&self.secret, &body))
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return not_paid("the payment service did not answer in time")
            }
            Err(e) => return not_paid(&format!("cannot reach the payment service: {e}")),
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(t) => t,
            Err(e) => return not_paid(&format!("reading the answer failed: {e}")),
        };
        if !status.is_success() {
            return not_paid(&format!("the payment service answered {}", status.as_u16()));
        }
        let tx_hash = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("tx_hash")
                    .and_then(|h| h.as_str())
                    .and_then(normalize_tx_hash)
            });
        match tx_hash {
            Some(tx_hash) => Delivery::Paid { tx_hash },
            None => not_paid("the payment service answered 2xx without a valid tx_hash"),
        }
    }
}

fn not_paid(reason: &str) -> Delivery {
    Delivery::NotPaid {
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
