//! The agent's HTTP client side: the one client, the login and heartbeat requests, and
//! what each answer means for the agent (back off, log in again, move on, give up).

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::Signer;
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use super::config::Trust;
use super::wire::{
    last_accepted_seq_hint, ChallengeReply, HeartbeatFields, HeartbeatReply, Problem, TokenReply,
};
use super::{
    now_us, parse_retry_after, refresh_after, sample_system, token_lifetime, Agent, Session,
};
use crate::crypto::signatures::login_message;
use crate::domain::timefmt::{parse_rfc3339_us, rfc3339_us};

/// Per-request limit (connect, send, answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A non-success answer, or no answer at all.
#[derive(Debug)]
pub(super) enum Failure {
    /// Connection error, timeout, 408, 429, 5xx: back off and try again.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 401 with the problem type.
    Unauthorized { kind: String, reason: String },
    /// 409 `replayed-heartbeat` (the counter has been moved on already).
    Replayed { reason: String },
    /// Refused for a reason that may pass: log and try again next tick.
    Rejected { reason: String },
    /// Nothing will fix it: exit non-zero with this reason.
    Fatal(String),
}

impl Failure {
    fn reason(&self) -> &str {
        match self {
            Failure::Transient { reason, .. }
            | Failure::Unauthorized { reason, .. }
            | Failure::Replayed { reason }
            | Failure::Rejected { reason }
            | Failure::Fatal(reason) => reason,
        }
    }
}

struct Reply {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Reply {
    fn problem(&self) -> Problem {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// `404 not-found: no such node` on one line.
    fn describe(&self) -> String {
        let p = self.problem();
        let mut s = self.status.as_u16().to_string();
        if let Some(kind) = &p.kind {
            s.push(' ');
            s.push_str(kind);
        }
        match (p.detail.or(p.title), p.kind.is_none()) {
            (Some(d), _) => {
                s.push_str(": ");
                s.push_str(&d);
            }
            (None, true) => {
                let text = String::from_utf8_lossy(&self.body);
                let text = text.trim();
                if !text.is_empty() {
                    s.push_str(": ");
                    s.push_str(&text.chars().take(200).collect::<String>());
                }
            }
            (None, false) => {}
        }
        one_line(&s)
    }

    /// The usual mapping of a non-success status.
    fn classify(&self, what: &str) -> Failure {
        let reason = format!("{what}: {}", self.describe());
        let kind = self.problem().kind.unwrap_or_default();
        match self.status.as_u16() {
            408 | 429 | 500..=599 => Failure::Transient {
                reason,
                retry_after: self.retry_after,
            },
            401 => Failure::Unauthorized { kind, reason },
            409 if kind == "replayed-heartbeat" => Failure::Replayed { reason },
            404 => Failure::Fatal(reason),
            _ => Failure::Rejected { reason },
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The error and its causes on one line (reqwest's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    one_line(&s)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// The one HTTP client: keep-alive, rustls with the ring provider, and the trust chosen
/// on the command line or in agent.toml.
pub(super) fn build_client(trust: &Trust) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(format!("lucid-node-agent/{}", crate::VERSION))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .tcp_keepalive(Duration::from_secs(60))
        .pool_max_idle_per_host(2);
    match trust {
        Trust::System => {}
        Trust::CaCert(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read --ca-cert {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("--ca-cert {} is not PEM: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "--ca-cert {} holds no PEM certificate",
                    path.display()
                ));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Trust::Fingerprint(digest) => {
            builder = builder.use_preconfigured_tls(super::pin::pinned_client_config(*digest)?);
        }
        Trust::Insecure => builder = builder.danger_accept_invalid_certs(true),
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up HTTPS: {}", error_chain(&e)))
}

/// GET `url` (with a bearer token when given); non-success answers and unreadable bodies
/// become one-line reasons.
pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<T, GetError> {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| GetError::Unreachable(error_chain(&e)))?;
    let status = resp.status();
    let retry_after = retry_after(resp.headers());
    let body = resp
        .bytes()
        .await
        .map_err(|e| GetError::Unreachable(error_chain(&e)))?
        .to_vec();
    if !status.is_success() {
        let reply = Reply {
            status,
            retry_after,
            body,
        };
        return Err(GetError::Status(status.as_u16(), reply.describe()));
    }
    serde_json::from_slice(&body)
        .map_err(|e| GetError::Status(status.as_u16(), format!("unexpected answer: {e}")))
}

/// Why a GET failed.
#[derive(Debug)]
pub(super) enum GetError {
    /// No answer (connection, TLS, timeout).
    Unreachable(String),
    /// An answer with this status (or a body that did not parse).
    Status(u16, String),
}

impl std::fmt::Display for GetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GetError::Unreachable(r) => write!(f, "server unreachable: {r}"),
            GetError::Status(_, r) => f.write_str(r),
        }
    }
}

impl Agent {
    async fn post(&self, url: &str, body: String, token: Option<&str>) -> Result<Reply, Failure> {
        let mut req = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let transient = |e: reqwest::Error| Failure::Transient {
            reason: error_chain(&e),
            retry_after: None,
        };
        let resp = req.send().await.map_err(transient)?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let body = resp.bytes().await.map_err(transient)?.to_vec();
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }

    /// Challenge, sign, token.
    async fn login(&self) -> Result<Session, Failure> {
        let challenge_body = serde_json::json!({ "node_id": self.node_id }).to_string();
        let reply = self
            .post(
                &format!("{}/api/v1/auth/challenge", self.base),
                challenge_body,
                None,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(self.login_failure("login challenge", &reply));
        }
        let challenge: ChallengeReply =
            serde_json::from_slice(&reply.body).map_err(|e| Failure::Transient {
                reason: format!("login challenge: unexpected answer: {e}"),
                retry_after: None,
            })?;
        let signature = B64.encode(self.key.sign(&login_message(&challenge.nonce)).to_bytes());
        let started = Instant::now();
        let token_body = serde_json::json!({
            "node_id": self.node_id,
            "nonce": challenge.nonce,
            "signature": signature,
        })
        .to_string();
        let reply = self
            .post(
                &format!("{}/api/v1/auth/token", self.base),
                token_body,
                None,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(self.login_failure("login", &reply));
        }
        let token: TokenReply =
            serde_json::from_slice(&reply.body).map_err(|e| Failure::Transient {
                reason: format!("login: unexpected answer: {e}"),
                retry_after: None,
            })?;
        // Prefer the token's own lifetime (immune to clock skew); else its expires_at
        // against our clock.
        let lifetime = token_lifetime(&token.token).or_else(|| {
            let exp = parse_rfc3339_us(&token.expires_at)?;
            exp.checked_sub(now_us()).map(Duration::from_micros)
        });
        tracing::info!(node_id = %self.node_id, expires_at = %token.expires_at, "logged in");
        Ok(Session {
            token: token.token,
            refresh_at: lifetime.map(|l| started + refresh_after(l)),
            expires_at: lifetime.map(|l| started + l),
        })
    }

    fn login_failure(&self, what: &str, reply: &Reply) -> Failure {
        let problem = reply.problem();
        let kind = problem.kind.as_deref().unwrap_or_default();
        let detail = problem.detail.as_deref().unwrap_or_default();
        let reason = format!("{what}: {}", reply.describe());
        match reply.status.as_u16() {
            404 => Failure::Fatal(format!(
                "node {} is not known to {} ({reason})",
                self.node_id, self.base
            )),
            400 => Failure::Fatal(format!("the server refused the login ({reason})")),
            401 if kind == "invalid-signature" => Failure::Fatal(format!(
                "the key in {} does not belong to node {} ({reason})",
                self.key_path.display(),
                self.node_id
            )),
            // An expired or already used nonce: ask again.
            401 => Failure::Transient {
                reason,
                retry_after: None,
            },
            403 if kind == "node-inactive" && detail.contains("deregistered") => {
                Failure::Fatal(format!("node {} was deregistered ({reason})", self.node_id))
            }
            _ => reply.classify(what),
        }
    }

    /// Logs in when there is no token or it is about to expire. A failed renewal keeps
    /// the old token while it is still valid.
    async fn ensure_session(&mut self) -> Result<(), Failure> {
        let now = Instant::now();
        let due = match &self.session {
            None => true,
            Some(s) => s.refresh_at.is_some_and(|t| now >= t),
        };
        if !due {
            return Ok(());
        }
        match self.login().await {
            Ok(session) => {
                self.session = Some(session);
                Ok(())
            }
            Err(e @ (Failure::Transient { .. } | Failure::Rejected { .. })) => {
                let still_valid = self
                    .session
                    .as_ref()
                    .and_then(|s| s.expires_at)
                    .is_some_and(|exp| now < exp);
                if still_valid {
                    tracing::warn!(
                        reason = e.reason(),
                        "token renewal failed; using the current token meanwhile"
                    );
                    Ok(())
                } else {
                    self.session = None;
                    Err(e)
                }
            }
            Err(e) => {
                self.session = None;
                Err(e)
            }
        }
    }

    /// One heartbeat with the current token.
    async fn send_heartbeat(&mut self) -> Result<HeartbeatReply, Failure> {
        let token = match &self.session {
            Some(s) => s.token.clone(),
            None => {
                return Err(Failure::Transient {
                    reason: "not logged in".into(),
                    retry_after: None,
                })
            }
        };
        let now = now_us();
        let seq = self.seq.next(now / 1000);
        let (cpu_load, mem_used_mb) = sample_system();
        let fields = HeartbeatFields {
            seq,
            sent_at: rfc3339_us(now),
            sessions_active: 0,
            bytes_relayed: 0,
            cpu_load,
            mem_used_mb,
        };
        let body = fields.signed_body(&self.node_id, &self.key);
        let url = format!("{}/api/v1/nodes/{}/heartbeat", self.base, self.node_id);
        let reply = self.post(&url, body, Some(&token)).await?;
        if reply.status.is_success() {
            self.persist(seq);
            let answer: HeartbeatReply = serde_json::from_slice(&reply.body).unwrap_or_default();
            tracing::debug!(seq, received_at = ?answer.received_at, "heartbeat accepted");
            return Ok(answer);
        }
        match reply.classify("heartbeat") {
            Failure::Replayed { reason } => {
                // The server's last accepted seq, when its detail names it (after a clock
                // step back, say), so one refusal is enough to get past it.
                let server_last = reply
                    .problem()
                    .detail
                    .as_deref()
                    .and_then(last_accepted_seq_hint);
                self.seq
                    .on_replayed(seq.max(server_last.unwrap_or(0)), now_us() / 1000);
                Err(Failure::Replayed { reason })
            }
            Failure::Fatal(reason) => Err(Failure::Fatal(format!(
                "{reason} (node {} was removed or does not exist)",
                self.node_id
            ))),
            other => Err(other),
        }
    }
    /// The current token, logging in first when needed.
    pub(super) async fn token(&mut self) -> Result<String, Failure> {
        self.ensure_session().await?;
        self.session
            .as_ref()
            .map(|s| s.token.clone())
            .ok_or(Failure::Transient {
                reason: "not logged in".into(),
                retry_after: None,
            })
    }

    /// Log in if needed and send one heartbeat; on a 401, log in again and retry once.
    pub(super) async fn beat(&mut self) -> Result<HeartbeatReply, Failure> {
        self.ensure_session().await?;
        match self.send_heartbeat().await {
            Err(Failure::Unauthorized { kind, reason }) => {
                tracing::info!(%kind, %reason, "token refused; logging in again");
                self.session = None;
                self.ensure_session().await?;
                match self.send_heartbeat().await {
                    Err(Failure::Unauthorized { reason, .. }) => Err(Failure::Rejected { reason }),
                    other => other,
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_answers_are_classified() {
        let reply = |status: u16, body: &str| Reply {
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: Some(Duration::from_secs(3)),
            body: body.as_bytes().to_vec(),
        };
        let p =
            |kind: &str| format!(r#"{{"type":"{kind}","title":"t","status":0,"detail":"d\nx"}}"#);
        assert!(matches!(
            reply(503, &p("overloaded")).classify("hb"),
            Failure::Transient {
                retry_after: Some(_),
                ..
            }
        ));
        assert!(matches!(
            reply(502, "<html>bad gateway</html>").classify("hb"),
            Failure::Transient { .. }
        ));
        assert!(matches!(
            reply(401, &p("token-expired")).classify("hb"),
            Failure::Unauthorized { .. }
        ));
        assert!(matches!(
            reply(409, &p("replayed-heartbeat")).classify("hb"),
            Failure::Replayed { .. }
        ));
        assert!(matches!(
            reply(409, &p("conflict")).classify("hb"),
            Failure::Rejected { .. }
        ));
        assert!(matches!(
            reply(404, &p("not-found")).classify("hb"),
            Failure::Fatal(_)
        ));
        assert!(matches!(
            reply(422, &p("rule")).classify("hb"),
            Failure::Rejected { .. }
        ));
        assert_eq!(reply(404, &p("not-found")).describe(), "404 not-found: d x");
    }
}
