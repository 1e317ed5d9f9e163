//! Revoking tokens: the use case shared by the API, the command line (service stopped) and
//! the console's list of issued tokens. The rules are in `domain::revocation`; the entries
//! are stored by the writer with their audit event, then put in force in the token service.

use serde_json::json;

use crate::clock::Micros;
use crate::domain::audit::AuditEvent;
use crate::domain::revocation::{
    max_token_lifetime_secs, IssuedAt, Revocation, RevocationTarget, Revocations,
};
use crate::domain::timefmt::rfc3339_us;
use crate::error::{ApiError, ApiResult};
use crate::store::queries::Reader;
use crate::store::{Actor, Writer};

use super::App;

/// The audit action of an issued token and of a revocation.
pub const ISSUE_ACTION: &str = "token.issue";
pub const REVOKE_ACTION: &str = "token.revoke";

/// A token issued through the API, as its audit event records it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub jti: String,
    pub subject: String,
    pub role: String,
    /// Wall-clock microseconds (the token's `iat_us`).
    pub issued_at_us: Micros,
    /// Seconds since the epoch.
    pub exp: u64,
    pub issued_by: String,
}

impl IssuedToken {
    /// The token of a `token.issue` event; None for other events and for events written
    /// before issues were recorded with their jti.
    pub fn from_event(event: &AuditEvent) -> Option<Self> {
        if event.action != ISSUE_ACTION {
            return None;
        }
        let detail: serde_json::Value = serde_json::from_str(&event.detail).ok()?;
        Some(Self {
            jti: detail["jti"].as_str()?.to_string(),
            subject: event.target.clone(),
            role: detail["role"].as_str().unwrap_or_default().to_string(),
            issued_at_us: detail["iat_us"].as_u64().unwrap_or(event.at_us),
            exp: detail["exp"].as_u64()?,
            issued_by: event.actor_subject.clone(),
        })
    }

    /// The revocation that refuses this token, if one is in force.
    pub fn revoked_by<'a>(&self, set: &'a Revocations) -> Option<&'a Revocation> {
        set.covering(
            &self.jti,
            &self.subject,
            IssuedAt {
                iat_secs: self.issued_at_us / 1_000_000,
                iat_us: Some(self.issued_at_us),
            },
        )
    }
}

/// The audit detail of an issued token.
pub fn issue_detail(
    role: &str,
    ttl_seconds: u64,
    jti: &str,
    iat_us: Micros,
    exp: u64,
) -> serde_json::Value {
    json!({
        "role": role,
        "ttl_seconds": ttl_seconds,
        "jti": jti,
        "iat_us": iat_us,
        "exp": exp,
        "expires_at": rfc3339_us(exp * 1_000_000),
    })
}

/// The longest a token of this deployment can live, in seconds.
pub fn lifetime_bound(node_token_ttl: std::time::Duration) -> u64 {
    max_token_lifetime_secs(node_token_ttl.as_secs())
}

/// Tokens issued through the API that have not expired yet, newest first, at most `limit`.
/// Walks the audit log back only as far as a live token can have been issued.
pub fn recent_issued(
    reader: &Reader,
    now_us: Micros,
    lifetime_secs: u64,
    limit: usize,
) -> ApiResult<Vec<IssuedToken>> {
    let since = now_us.saturating_sub(lifetime_secs.saturating_mul(1_000_000));
    let now_secs = now_us / 1_000_000;
    let mut out = Vec::new();
    reader.audit_newest_first(since, |event| {
        if let Some(t) = IssuedToken::from_event(&event) {
            if t.exp >= now_secs {
                out.push(t);
            }
        }
        out.len() < limit
    })?;
    Ok(out)
}

/// The entry revoking `target` at `revoked_at_us`: a jti issued through the API expires
/// with that token (found in the audit log); otherwise after the longest lifetime.
pub fn plan(
    reader: &Reader,
    target: RevocationTarget,
    revoked_at_us: Micros,
    lifetime_secs: u64,
) -> ApiResult<Revocation> {
    let mut exp = None;
    if let RevocationTarget::Jti(jti) = &target {
        let since = revoked_at_us.saturating_sub(lifetime_secs.saturating_mul(1_000_000));
        reader.audit_newest_first(since, |event| match IssuedToken::from_event(&event) {
            Some(t) if &t.jti == jti => {
                exp = Some(t.exp);
                false
            }
            _ => true,
        })?;
    }
    Ok(Revocation::new(target, revoked_at_us, exp, lifetime_secs))
}

/// Stores `entry` with its audit event and prunes the expired entries, in one commit.
/// Returns the entry as stored (widened by an earlier one for the same target).
pub async fn commit(
    writer: &Writer<ApiError>,
    entry: Revocation,
    actor: Actor,
    now_us: Micros,
) -> ApiResult<Revocation> {
    writer
        .write(move |b| {
            let (field, value) = match &entry.target {
                RevocationTarget::Jti(j) => ("jti", j.clone()),
                RevocationTarget::Subject(s) => ("subject", s.clone()),
            };
            let stored = b.put_revocation(entry)?;
            let pruned = b.prune_revocations(now_us)?;
            b.audit(
                &actor,
                REVOKE_ACTION,
                &value,
                json!({
                    field: value,
                    "revoked_at": rfc3339_us(stored.revoked_at_us),
                    "expires_at": rfc3339_us(stored.expires_at_us),
                    "pruned": pruned,
                }),
            )?;
            Ok(stored)
        })
        .await
}

/// Revokes `target` now: durable first, then in force for every following request.
pub async fn revoke(app: &App, target: RevocationTarget, actor: Actor) -> ApiResult<Revocation> {
    let revoked_at = app.tokens.stamp_us();
    let lifetime = lifetime_bound(app.config.node_token_ttl);
    let reader = app.store.reader()?;
    // The jti's expiry is looked up in the audit log, a walk off the async threads.
    let entry = tokio::task::spawn_blocking(move || plan(&reader, target, revoked_at, lifetime))
        .await
        .map_err(|e| ApiError::unavailable(format!("the revocation was interrupted: {e}")))??;
    let stored = commit(&app.writer, entry, actor, revoked_at).await?;
    app.tokens.add_revocation(stored.clone(), revoked_at);
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, detail: serde_json::Value) -> AuditEvent {
        AuditEvent {
            seq: 1,
            at_us: 5_000_000,
            actor_subject: "root".into(),
            actor_role: "admin".into(),
            action: action.into(),
            target: "op-1".into(),
            detail: detail.to_string(),
            prev_hash: None,
            hash: [0; 32],
        }
    }

    #[test]
    fn an_issue_event_names_its_token() {
        let e = event(
            ISSUE_ACTION,
            issue_detail("operator", 60, "abc", 7_000_001, 67),
        );
        let t = IssuedToken::from_event(&e).unwrap();
        assert_eq!(t.jti, "abc");
        assert_eq!(t.subject, "op-1");
        assert_eq!(t.role, "operator");
        assert_eq!(t.issued_at_us, 7_000_001);
        assert_eq!(t.exp, 67);
        assert_eq!(t.issued_by, "root");
    }

    #[test]
    fn other_events_and_issues_recorded_without_jti_name_no_token() {
        assert!(
            IssuedToken::from_event(&event("pool.create", json!({"jti": "x", "exp": 1}))).is_none()
        );
        assert!(IssuedToken::from_event(&event(
            ISSUE_ACTION,
            json!({"role": "admin", "ttl_seconds": 60})
        ))
        .is_none());
    }
}
