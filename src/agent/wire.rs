//! What the agent sends and reads back: the heartbeat's signed fields and body, and the
//! shapes of the server's answers.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde::Deserialize;

use crate::domain::heartbeat::canonical_bytes;

/// The signed fields of one heartbeat, each number already as the text that is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatFields {
    pub seq: u64,
    pub sent_at: String,
    pub sessions_active: u64,
    pub bytes_relayed: u64,
    /// The JSON number text, e.g. `0.35` (see [`super::format_cpu_load`]).
    pub cpu_load: String,
    pub mem_used_mb: u64,
}

impl HeartbeatFields {
    /// The canonical bytes the node signs ([`canonical_bytes`]), from these texts.
    pub fn canonical(&self, node_id: &str) -> String {
        canonical_bytes(
            node_id,
            &self.seq.to_string(),
            &self.sent_at,
            &self.sessions_active.to_string(),
            &self.bytes_relayed.to_string(),
            &self.cpu_load,
            &self.mem_used_mb.to_string(),
        )
    }

    /// The JSON body, written by hand so every number is exactly the text that was signed.
    pub fn body(&self, signature_b64: &str) -> String {
        format!(
            "{{\"seq\":{},\"sent_at\":{},\"sessions_active\":{},\"bytes_relayed\":{},\"cpu_load\":{},\"mem_used_mb\":{},\"signature\":{}}}",
            self.seq,
            json_string(&self.sent_at),
            self.sessions_active,
            self.bytes_relayed,
            self.cpu_load,
            self.mem_used_mb,
            json_string(signature_b64)
        )
    }

    /// Signs the canonical bytes and returns the request body.
    pub fn signed_body(&self, node_id: &str, key: &SigningKey) -> String {
        let signature = B64.encode(key.sign(self.canonical(node_id).as_bytes()).to_bytes());
        self.body(&signature)
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// The last accepted seq named in a `replayed-heartbeat` detail
/// ("... not greater than the last accepted seq 1234"), if any.
pub fn last_accepted_seq_hint(detail: &str) -> Option<u64> {
    let rest = detail.split("last accepted seq").nth(1)?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A problem+json body (every field optional: proxies answer with anything).
#[derive(Deserialize, Default)]
pub(super) struct Problem {
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) title: Option<String>,
    pub(super) detail: Option<String>,
}

/// The answer to `POST /auth/challenge`.
#[derive(Deserialize)]
pub(super) struct ChallengeReply {
    pub(super) nonce: String,
}

/// The answer to `POST /auth/token`.
#[derive(Deserialize)]
pub(super) struct TokenReply {
    pub(super) token: String,
    pub(super) expires_at: String,
}

/// The answer to a heartbeat.
#[derive(Deserialize, Default)]
pub(super) struct HeartbeatReply {
    #[serde(default)]
    pub(super) status: Option<String>,
    #[serde(default)]
    pub(super) received_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::format_cpu_load;
    use crate::crypto::keys::generate_signing_key;
    use crate::crypto::signatures::verify_signature;
    use crate::domain::timefmt::rfc3339_us;
    use serde_json::Value;

    /// The raw text of each top-level field of a flat JSON object, in order.
    fn raw_fields(body: &str) -> Vec<(String, String)> {
        fn skip_ws(s: &str, mut i: usize) -> usize {
            while s.as_bytes().get(i).is_some_and(|b| b.is_ascii_whitespace()) {
                i += 1;
            }
            i
        }
        // One JSON value starting at `i`: (value, end offset).
        fn value_at(s: &str, i: usize) -> (Value, usize) {
            let mut stream = serde_json::Deserializer::from_str(&s[i..]).into_iter::<Value>();
            let v = stream.next().expect("a value").expect("valid JSON");
            (v, i + stream.byte_offset())
        }
        let mut out = Vec::new();
        let mut i = skip_ws(body, 0);
        assert_eq!(&body[i..i + 1], "{");
        i += 1;
        loop {
            i = skip_ws(body, i);
            let (key, end) = value_at(body, i);
            i = skip_ws(body, end);
            assert_eq!(&body[i..i + 1], ":");
            i = skip_ws(body, i + 1);
            let (_, end) = value_at(body, i);
            out.push((key.as_str().unwrap().to_string(), body[i..end].to_string()));
            i = skip_ws(body, end);
            match &body[i..i + 1] {
                "," => i += 1,
                "}" => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        out
    }

    fn sample_fields(cpu: Option<f64>, cpus: usize) -> HeartbeatFields {
        HeartbeatFields {
            seq: 1_764_082_185_123,
            sent_at: rfc3339_us(1_764_082_185_123_456),
            sessions_active: 0,
            bytes_relayed: 0,
            cpu_load: format_cpu_load(cpu, cpus),
            mem_used_mb: 412,
        }
    }

    #[test]
    fn body_and_canonical_bytes_agree_and_the_signature_verifies() {
        let key = generate_signing_key();
        let node_id = "node_abc-1";
        for (cpu, cpus) in [
            (Some(0.7), 2),
            (Some(0.0), 1),
            (Some(2.0), 2),
            (Some(3.3), 4),
            (None, 8),
            (Some(12.345), 3),
        ] {
            let fields = sample_fields(cpu, cpus);
            let body = fields.signed_body(node_id, &key);
            // Valid JSON with the contract's fields and types.
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(v["seq"].is_u64() && v["sent_at"].is_string() && v["signature"].is_string());
            assert!(v["sessions_active"].is_u64() && v["bytes_relayed"].is_u64());
            assert!(v["cpu_load"].is_f64() && v["mem_used_mb"].is_u64());
            // Rebuild the canonical string from the raw texts in the body.
            let raw: std::collections::HashMap<_, _> = raw_fields(&body).into_iter().collect();
            assert_eq!(raw.len(), 7);
            let text = |k: &str| -> String {
                let r = &raw[k];
                match serde_json::from_str::<Value>(r).unwrap() {
                    Value::String(s) => s,
                    _ => r.clone(),
                }
            };
            let rebuilt = canonical_bytes(
                node_id,
                &text("seq"),
                &text("sent_at"),
                &text("sessions_active"),
                &text("bytes_relayed"),
                &text("cpu_load"),
                &text("mem_used_mb"),
            );
            assert_eq!(rebuilt, fields.canonical(node_id));
            let pk = key.verifying_key().to_bytes();
            assert!(verify_signature(
                &pk,
                rebuilt.as_bytes(),
                &text("signature")
            ));
            // A server that parses cpu_load as f64 and prints it with serde_json again
            // gets the same text.
            assert_eq!(v["cpu_load"].to_string(), raw["cpu_load"]);
        }
    }

    #[test]
    fn canonical_bytes_follow_the_contract() {
        let fields = sample_fields(Some(0.7), 2);
        assert_eq!(
            fields.canonical("node_x"),
            "lucid-hb-v1|node_x|1764082185123|2025-11-25T14:49:45.123456Z|0|0|0.35|412"
        );
    }
}
